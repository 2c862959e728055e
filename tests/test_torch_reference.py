"""The PyTorch reference (benchmarks/torch_reference.py) computes what dream_jax does:
same activations at every depth, same DeepDream step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import TORCH_ABSENT

torch = pytest.importorskip("torch", reason=TORCH_ABSENT)
from benchmarks import torch_reference as ref  # noqa: E402
from dream_jax.engine import deepdream, gradients  # noqa: E402
from dream_jax.model import googlenet, preprocess
from dream_jax import objectives
from dream_jax.engine.config import DreamConfig  # noqa: E402

pytestmark = pytest.mark.slow  # parity: dreams and forward passes in two frameworks

_apply = jax.jit(googlenet.apply, static_argnames="taps")  # faster than op by op
TAPS = ("conv2/norm2", "inception_4c/output", "inception_5b/output", "loss3/classifier")


@pytest.fixture(scope="module")
def torch_params(params):
    return ref.torch_params(params)


def _noise(shape, seed=0):
    rgb = np.random.default_rng(seed).uniform(0, 255, shape)
    return preprocess.to_model(rgb)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _relative_error(ours, theirs):
    return np.abs(ours - theirs).max() / np.abs(ours).max()


# 225x299: odd sides (Caffe's ceil pooling) and a 1x3 pool5, so the classifier
# is averaged over positions; 160x230 is too small for pool5 and stops at 5b.
@pytest.mark.parametrize("height,width,taps", [
    (224, 224, TAPS), (225, 299, TAPS), (160, 230, TAPS[:3])])
def test_activations_match_flax(params, torch_params, height, width, taps):
    images = _noise((2, height, width, 3))
    flax_acts = _apply(params, jnp.asarray(images), taps)
    with torch.no_grad():
        torch_acts = ref.forward(torch_params, _nchw(images), taps)
    assert set(torch_acts) == set(taps)
    for tap in taps:
        theirs = torch_acts[tap].numpy()
        theirs = theirs.transpose(0, 2, 3, 1) if theirs.ndim == 4 else theirs
        ours = np.asarray(flax_acts[tap])
        assert theirs.shape == ours.shape, tap
        assert _relative_error(ours, theirs) <= 1e-4, tap


def test_stops_at_the_deepest_requested_tap(torch_params):
    """Only the stem's parameters: asking for a stem tap must not touch the rest."""
    stem = {k: v for k, v in torch_params.items() if k.startswith("conv")}
    with torch.no_grad():
        out = ref.forward(stem, _nchw(_noise((1, 64, 64, 3))), ("conv2/norm2",))
        assert set(out) == {"conv2/norm2"}
        with pytest.raises(KeyError):
            ref.forward(stem, _nchw(_noise((1, 64, 64, 3))), ("inception_3a/output",))


def test_dream_octave_matches_jax(params, torch_params):
    """Without jitter the random rolls are identity in both, so the steps
    (gradient, mean |g| normalisation per image, step, clip) must agree."""
    config = DreamConfig(iter_n=2, jitter=0)
    layer = "inception_3b/output"
    images = _noise((2, 48, 64, 3))
    objective_list = [objectives.parse(layer)] * 2
    terms = objectives.union_terms(objective_list)
    weights = jnp.asarray(objectives.weight_matrix(objective_list, terms))
    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(2)])
    ours = np.asarray(deepdream.dream_octave(
        params, jnp.asarray(images), weights, {}, keys, jnp.int32(config.iter_n), terms=terms,
        gradient=gradients.Whole(), config=deepdream.StepConfig.of(config)))
    theirs = ref.dream_octave(torch_params, _nchw(images), layer,
                              torch.Generator().manual_seed(0), config)
    theirs = theirs.numpy().transpose(0, 2, 3, 1)
    assert np.abs(ours - images).mean() > 1.0  # the steps did move the pixels
    np.testing.assert_allclose(theirs, ours, atol=1e-2)
