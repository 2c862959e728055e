"""Tiled gradients equal the whole image's; the memory plan picks whole or tiles."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dream_jax
from dream_jax.engine import deepdream, gradients
from dream_jax.model import googlenet
from dream_jax import objectives
from dream_jax.errors import UserError
from dream_jax.engine.config import DreamConfig
from tests.conftest import QUICK_LAYER as LAYER, smooth_photo as _photo, to_model as _model

FAST = DreamConfig(octave_n=1, iter_n=2)


@pytest.mark.parametrize("size", [64, 100, 257, 511, 512, 1000, 1537])
@pytest.mark.parametrize("tile,halo,stride", [(64, 32, 8), (128, 160, 16), (512, 160, 16)])
def test_windows_cover_every_pixel_once_on_the_layers_grid(size, tile, halo, stride):
    length, windows = gradients.Tiles(tile, halo, stride).windows(size)
    owned = np.zeros(size, int)
    for start, begin, end in windows:
        assert start % stride == 0 and 0 <= start and start + length <= size
        assert start <= begin < end <= start + length
        owned[begin:end] += 1
        # A halo on every side that is not the image's own edge.
        assert begin - start >= min(halo, begin) - stride + 1
        assert start + length - end >= min(halo, size - end) - stride + 1 or end == size
    assert np.all(owned == 1)


def _gradient(params, image, layer, gradient):
    o = objectives.parse(layer)
    value = lambda x: deepdream.objective_value(  # noqa: E731
        params, x, jnp.asarray(o.weights), {}, o.terms, "native")
    return np.asarray(jax.jit(gradient.__call__, static_argnums=0)(value, image))


def test_tiled_gradient_equals_the_whole_images(params):
    """Windows with the layer's halo, on its stride's grid: the same gradient up to
    a constant scale (each window's objective is a mean over its own positions)."""
    image = _model(_photo(size=(200, 264)))
    whole = _gradient(params, image, LAYER, gradients.Whole())
    halo, stride = gradients.halo_for(LAYER)
    tiled = _gradient(params, image, LAYER, gradients.Tiles(64, halo, stride))
    scale = np.sum(whole * tiled) / np.sum(tiled * tiled)
    error = np.abs(scale * tiled - whole) / np.abs(whole).mean()
    assert np.mean(error < 0.1) > 0.99 and error.mean() < 0.02


def test_tiled_dream_agrees_with_the_whole_image_dream(params):
    """After the normalised step, tiles change no pixel by more than 1 level."""
    image = _photo(size=(200, 264))
    config = FAST.replace(octave_n=1, iter_n=1, jitter=0)
    whole = dream_jax.dream(image, LAYER, params, config=config)
    tiled = dream_jax.dream(image, LAYER, params, config=config.replace(tile_size=64))
    assert np.abs(whole.astype(int) - tiled).max() <= 1


def test_plan_is_whole_when_it_fits_and_tiles_when_it_does_not():
    layer = "inception_4c/output"
    need = gradients.gradient_bytes(512, 512, layer)
    assert gradients.plan(512, 512, 1, layer, budget=need) == gradients.Whole()
    tiles = gradients.plan(512, 512, 1, layer, budget=need // 2)
    halo, stride = gradients.halo_for(layer)
    assert tiles.halo == halo and tiles.stride == stride and tiles.tile % stride == 0
    assert gradients.gradient_bytes(tiles.tile + 2 * halo, tiles.tile + 2 * halo,
                                    layer) <= need // 2
    assert gradients.plan(512, 512, 4, layer, budget=need) != gradients.Whole()  # per image
    assert gradients.plan(512, 512, 1, layer, tile_size=256, budget=need).tile == 256


def test_halo_covers_half_the_receptive_field():
    assert googlenet.receptive_field("conv1/7x7_s2") == (7, 2)
    assert googlenet.receptive_field("inception_4c/output") == (299, 16)
    halo, stride = gradients.halo_for("inception_4c/output")
    assert (halo, stride) == (160, 16)


@pytest.mark.parametrize("layer", ["inception_3b/output", "inception_4c/output"])
def test_memory_estimate_bounds_xlas_own(params, layer):
    o = objectives.parse(layer)
    grad = jax.grad(lambda x: deepdream.objective_value(
        params, x, jnp.asarray(o.weights), {}, o.terms, "native"))
    analysis = jax.jit(grad).lower(jax.ShapeDtypeStruct((160, 192, 3), jnp.float32)) \
        .compile().memory_analysis()
    estimate = gradients.gradient_bytes(160, 192, layer)
    assert analysis.temp_size_in_bytes <= estimate <= 2 * analysis.temp_size_in_bytes


def test_whole_map_objectives_refuse_tiles(params):
    image = _photo(size=(200, 264))
    with pytest.raises(UserError, match="needs the whole image"):
        dream_jax.dream(image, f"neuron({LAYER},3)", params,
                        config=FAST.replace(tile_size=64))
    out = dream_jax.dream(image, f"neuron({LAYER},3)", params, config=FAST)
    assert out.shape == image.shape


def test_default_budget_is_positive_and_capped_on_the_host():
    budget = gradients.default_budget()
    assert 0 < budget <= gradients.HOST_BUDGET_CAP
