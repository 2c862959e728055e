"""The Flax GoogLeNet's structure: names, shapes, Caffe pooling/LRN semantics."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dream_jax.model import googlenet


def test_parameter_count_matches_published_model():
    shapes = googlenet.param_shapes()
    assert len(shapes) == 58
    assert sum(math.prod(s) for leaves in shapes.values() for s in leaves.values()) == 6_998_552
    assert shapes["conv1/7x7_s2"]["kernel"] == (7, 7, 3, 64)
    assert shapes["loss3/classifier"]["kernel"] == (1024, 1000)


@pytest.mark.parametrize("classes", [googlenet.NUM_CLASSES, 365])
def test_parameter_shapes_are_flax_inits(classes):
    """The shapes read from the network's definition are the ones flax's own
    init gives its Conv and Dense layers."""
    init = functools.partial(googlenet.model("native", classes).init, taps=("prob",))
    image = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    flax_params = jax.eval_shape(init, jax.random.PRNGKey(0), image)["params"]
    assert jax.tree.structure(flax_params) == jax.tree.structure(
        googlenet.abstract_params(classes))
    assert jax.tree.leaves(flax_params) == jax.tree.leaves(googlenet.abstract_params(classes))
    assert list(googlenet.param_shapes(classes)) == [  # in the network's order
        layer for layer in googlenet.LAYERS if layer in flax_params]


def test_layer_shapes_at_224_are_caffes():
    shapes = googlenet.layer_shapes(224, 224)
    assert shapes["conv1/7x7_s2"] == (112, 112, 64)
    assert shapes["pool1/3x3_s2"] == (56, 56, 64)   # ceil((112-3)/2)+1 = 56 (floor gives 55)
    assert shapes["conv2/norm2"] == (56, 56, 192)
    assert shapes["inception_3b/output"] == (28, 28, 480)
    assert shapes["inception_4c/output"] == (14, 14, 512)
    assert shapes["inception_4e/output"] == (14, 14, 832)
    assert shapes["inception_5b/output"] == (7, 7, 1024)
    assert shapes["pool5/7x7_s1"] == (1, 1, 1024)
    assert shapes["prob"] == (1000,)
    assert list(shapes) == list(googlenet.LAYERS)


def test_too_small_inputs_report_none_instead_of_crashing():
    shapes = googlenet.layer_shapes(40, 40)
    assert shapes["inception_4c/output"] == (2, 2, 512)  # 40->20->10->5->2
    assert shapes["pool5/7x7_s1"] is None and shapes["prob"] is None


def test_stops_at_the_deepest_requested_tap():
    """Only the stem's parameters exist: requesting a stem tap must not touch the rest."""
    abstract = googlenet.abstract_params()
    stem = {k: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape), v)
            for k, v in abstract.items() if k.startswith("conv")}
    out = googlenet.apply(stem, jnp.zeros((1, 64, 64, 3)), ("conv2/norm2", "pool1/norm1"))
    assert set(out) == {"conv2/norm2", "pool1/norm1"}
    with pytest.raises(Exception):
        googlenet.apply(stem, jnp.zeros((1, 64, 64, 3)), ("inception_3a/output",))


def test_apply_reads_existing_parameters_without_tracing_their_initializer(monkeypatch):
    """flax's `param` traces a layer's initializer on every apply to check its shape;
    the network reads loaded parameters as they are (the store checks shapes), so
    an apply, and an octave's trace, pays for no initializer."""
    abstract = googlenet.abstract_params()
    stem = {k: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape), v)
            for k, v in abstract.items() if k.startswith("conv")}
    calls = []
    real = googlenet._init_layer
    monkeypatch.setattr(googlenet, "_init_layer", lambda *a: calls.append(a) or real(*a))
    googlenet.apply(stem, jnp.zeros((1, 64, 64, 3)), ("conv2/norm2",))
    assert calls == []
    googlenet.model("native").init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)),
                                   taps=("conv2/norm2",))
    assert len(calls) == 3  # a new model's parameters still come from it


def test_unknown_layer_lists_valid_names():
    with pytest.raises(ValueError, match="inception_4c/output"):
        googlenet.apply({}, jnp.zeros((1, 224, 224, 3)), ("inception_9z/output",))


@pytest.mark.parametrize("n", list(range(1, 40)) + [223, 224, 517])
def test_map_size_is_the_networks(n):
    shapes = googlenet.layer_shapes(n, n + 1)
    for layer, shape in shapes.items():
        if shape is not None and len(shape) == 3:
            assert (googlenet.map_size(layer, n), googlenet.map_size(layer, n + 1)) == shape[:2]
        fits = min(googlenet.map_size(layer, n), googlenet.map_size(layer, n + 1)) >= 1
        assert fits == (shape is not None), layer


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["inception_3a/output", "inception_4c/3x3", "inception_4c/output"])
def test_receptive_field_bounds_where_the_gradient_reaches(params, layer):
    """One map position's input gradient stays inside its receptive field."""
    size, stride = googlenet.receptive_field(layer)
    n = 320
    position = googlenet.map_size(layer, n) // 2
    grad = jax.grad(lambda x: googlenet.apply(params, x[None], (layer,))[layer][
        0, position, position].sum())(jnp.ones((n, n, 3)) * 20.0)
    rows = np.nonzero(np.abs(np.asarray(grad)).sum(axis=(1, 2)))[0]
    assert rows.size and rows.max() - rows.min() + 1 <= size
