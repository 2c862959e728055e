"""The model interface: one registered architecture, its geometry checked against
its own forward pass (on small random parameters: no weights needed), and the
rule that the library reaches GoogLeNet only through the interface."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dream_jax import model
from dream_jax.model import googlenet
from tests.conftest import imported_names

ROOT = Path(__file__).resolve().parents[1]
# Allowed to use GoogLeNet's own definition: the model package, and the independent
# PyTorch port that is checked against it.
ALLOWED = (ROOT / "dream_jax" / "model", ROOT / "benchmarks" / "torch_reference.py")
CLASSES = 7


def googlenet_imports(source: str) -> list[int]:
    """Line numbers where `source` imports the googlenet module or a name from it."""
    return sorted({line for line, name in imported_names(source)
                   if name.split(".")[-1] == "googlenet" or ".googlenet." in name})


def test_the_scan_finds_every_way_to_import_googlenet():
    assert googlenet_imports("from dream_jax.model import caffe_ops, googlenet") == [1]
    assert googlenet_imports("import dream_jax.model.googlenet as g") == [1]
    assert googlenet_imports("from . import googlenet") == [1]
    assert googlenet_imports("x = 1\nfrom dream_jax.model.googlenet import LAYERS") == [2]
    assert googlenet_imports("from dream_jax.model import DEFAULT as NET, preprocess") == []


def test_nothing_outside_the_model_package_imports_googlenet():
    files = [p for folder in ("dream_jax", "scripts", "benchmarks")
             for p in sorted((ROOT / folder).rglob("*.py"))
             if not any(p == a or a in p.parents for a in ALLOWED)]
    assert len(files) > 40
    offenders = {str(p.relative_to(ROOT)): lines for p in files
                 if (lines := googlenet_imports(p.read_text()))}
    assert not offenders, f"import googlenet through dream_jax.model's interface: {offenders}"


def test_googlenet_is_the_registered_default():
    assert model.get("googlenet") is model.DEFAULT is googlenet.MODEL
    assert model.MODELS == {"googlenet": googlenet.MODEL}
    with pytest.raises(ValueError, match="unknown model 'vgg16'.*googlenet"):
        model.get("vgg16")
    hash(model.DEFAULT)  # a static argument of jitted functions


def test_order_channels_and_preprocessing_come_from_the_network():
    net = model.DEFAULT
    assert net.in_order({"prob", "conv1/7x7_s2", "not a layer"}) == ("conv1/7x7_s2", "prob")
    assert net.channels("inception_4c/output") == 512
    assert net.channels(net.classifier_layer) == net.default_classes == 1000
    assert set(net.stages) <= set(net.layers) and net.in_order(net.stages) == net.stages
    rgb = jnp.array([[[10.0, 20.0, 30.0]]])
    assert net.to_model(rgb).tolist() == [[[30 - 104.0, 20 - 116.0, 10 - 122.0]]]
    assert jnp.allclose(net.from_model(net.to_model(rgb, net.mean_bgr), net.mean_bgr), rgb)


@pytest.fixture(scope="module")
def random_params():
    """Small random parameters of the model's own shapes (a classifier of CLASSES)."""
    shapes = model.DEFAULT.abstract_params(CLASSES)
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: (0.05 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


@pytest.mark.parametrize("height,width", [(57, 70), (224, 231)])
def test_geometry_agrees_with_the_forward_pass(random_params, height, width):
    """Every tap's real output shape is what layer_shapes and map_size say; too
    small layers are None there, and the network refuses them."""
    net = model.DEFAULT
    assert net.num_classes(random_params) == CLASSES
    expected = net.layer_shapes(height, width, CLASSES)
    fits = tuple(layer for layer in net.layers if expected[layer] is not None)
    assert fits and fits == net.layers[:len(fits)]
    out = jax.jit(net.apply, static_argnums=2)(random_params, jnp.zeros((1, height, width, 3)),
                                                fits)
    for layer in fits:
        assert tuple(out[layer].shape[1:]) == expected[layer], layer
        if len(expected[layer]) == 3:
            assert expected[layer][:2] == (net.map_size(layer, height),
                                           net.map_size(layer, width)), layer
    for layer in net.layers[len(fits):]:
        assert min(net.map_size(layer, height), net.map_size(layer, width)) < 1, layer
    if len(fits) < len(net.layers):  # the first layer too small: refused, or an empty map
        first = net.layers[len(fits)]
        try:
            shape = jax.eval_shape(lambda p, x: net.apply(p, x, (first,)), random_params,
                                   jnp.zeros((1, height, width, 3)))[first].shape
        except (TypeError, ValueError):
            shape = None
        assert shape is None or 0 in shape, (first, shape)
    else:
        assert out["prob"].shape == (1, CLASSES)
