"""The dream engine: steps ascend, batches equal singles, seeds, octaves, NaN guard."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dream_jax
from dream_jax import objectives
from dream_jax.engine import config as config_lib, deepdream, gradients, inputs
from dream_jax.engine.config import DreamConfig
from dream_jax.errors import UserError

from tests.conftest import QUICK_LAYER as LAYER, smooth_photo as _photo, to_model as _model

FAST = DreamConfig(octave_n=1, iter_n=2)
dream = dream_jax.dream


def _value(params, rgb, objective, data=None):
    o = objectives.as_objective(objective)
    return float(deepdream.objective_value(params, _model(rgb), jnp.asarray(o.weights),
                                           data or {}, o.terms, "native"))


def _octave(params, images, keys, weights=None, steps=FAST.iter_n, config=FAST):
    terms = objectives.parse(LAYER).terms
    weights = jnp.ones((len(images), 1)) if weights is None else weights
    return deepdream.dream_octave(params, images, weights, {}, keys, jnp.int32(steps),
                                  terms=terms, gradient=gradients.Whole(),
                                  config=deepdream.StepConfig.of(config))


@pytest.mark.parametrize("objective", [LAYER, f"channel({LAYER},5)", "mean(conv2/norm2)"])
def test_steps_increase_the_objective(params, objective):
    image = _photo()
    before = _value(params, image, objective)
    after = _value(params, dream(image, objective, params, config=FAST), objective)
    assert after > before


@pytest.mark.slow
def test_batch_equals_single_runs(params):
    images = jnp.stack([_model(_photo(s)) for s in range(3)])
    keys = jnp.stack([jax.random.PRNGKey(s) for s in (5, 6, 7)])
    batched = _octave(params, images, keys)
    for i in range(3):
        single = _octave(params, images[i:i + 1], keys[i:i + 1])
        np.testing.assert_allclose(batched[i], single[0], atol=1e-3, rtol=1e-4)


@pytest.mark.slow
def test_images_times_objectives_in_one_call_match_singles(params):
    images = np.stack([_photo(0), _photo(1)])
    objective_list = [LAYER, f"channel({LAYER},9)"]
    grid = dream(images, objective_list, params, config=FAST, seed=3)
    assert grid.shape == (2, 2, 96, 112, 3) and grid.dtype == np.uint8
    single = dream(images[1], objective_list[1], params, config=FAST, seed=3)
    assert np.abs(grid[1, 1].astype(int) - single).max() <= 1


def test_same_seed_same_pixels_different_seed_different(params):
    image = _photo()
    a = dream(image, LAYER, params, config=FAST, seed=1)
    b = dream(image, LAYER, params, config=FAST, seed=1)
    c = dream(image, LAYER, params, config=FAST, seed=2)
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)


def test_octave_shapes_are_the_notebooks():
    """scipy.ndimage.zoom(x, 1/1.4) sizes: round(n * (1/1.4)), level after level."""
    shapes = deepdream.octave_shapes(575, 1024, 4, 1.4)
    assert shapes == [(575, 1024), (411, 731), (294, 522), (210, 373)]
    assert deepdream.octave_shapes(100, 100, 3, 2.0) == [(100, 100), (50, 50), (25, 25)]


def test_zoom_is_the_notebooks_linear_zoom():
    """scipy.ndimage.zoom(order=1) (corners aligned, no antialiasing), on both axes."""
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(0).normal(size=(2, 37, 53, 3)).astype(np.float32)
    for shape in [(26, 38), (37, 53), (52, 74), (1, 5)]:
        expected = scipy_ndimage.zoom(x, (1, shape[0] / 37, shape[1] / 53, 1), order=1)
        assert expected.shape[1:3] == shape
        np.testing.assert_allclose(np.asarray(deepdream.zoom(jnp.asarray(x), shape)), expected,
                                   atol=1e-5)


@pytest.mark.slow
def test_octaves_too_small_are_skipped_not_fatal(params):
    """class() needs pool5 (7x7 at inception_5b): 256 px fits, 256/1.4 = 183 px does not."""
    out = dream(_photo(size=(256, 256)), "class(1)", params, config=FAST.replace(octave_n=3))
    assert out.shape == (256, 256, 3)
    with pytest.raises(UserError, match="too small"):
        dream(_photo(size=(96, 96)), "class(1)", params, config=FAST)


def test_flat_black_image_never_produces_nan(params):
    black = np.zeros((96, 96, 3), np.uint8)
    for how in config_lib.NORMALIZERS:
        out = dream(black, "neuron(conv1/7x7_s2, 0, 0, 0)", params,
                    config=FAST.replace(normalize=how))
        assert out.dtype == np.uint8 and np.isfinite(out).all()


@pytest.mark.slow
def test_guide_objective_pulls_towards_the_guide(params):
    image, guide = _photo(0), _photo(7, size=(80, 80))
    o = objectives.parse(f"guide({LAYER})")
    data = inputs.guide_data(params, guide, o.terms)
    out = dream(image, o, params, config=FAST, guide=guide)
    assert _value(params, out, o, data) > _value(params, image, o, data)
    with pytest.raises(UserError, match="guide"):
        dream(image, o, params, config=FAST)


@pytest.mark.parametrize("field,value", [("iter_n", 0), ("octave_n", 0), ("octave_n", 101),
                                         ("octave_scale", 1.0), ("octave_scale", float("nan")),
                                         ("step_size", -1.0), ("jitter", -1), ("tile_size", 8),
                                         ("memory_budget", -1), ("normalize", "l1"),
                                         ("precision", "float16"), ("kernels", "fast")])
def test_bad_config_is_refused_when_made(field, value):
    with pytest.raises(UserError, match=field.split("_")[0]):
        DreamConfig().replace(**{field: value})


def test_unknown_config_field_is_refused():
    with pytest.raises(UserError, match="unknown config field"):
        DreamConfig().replace(iterations=3)


def test_normalized_ascent_is_an_optax_transformation():
    """step_size * g / mean|g| as optax updates: applied, they ascend."""
    g = jnp.array([[1.0, -3.0], [0.0, 4.0]])
    tx = deepdream.normalized_ascent(1.5)
    updates, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(updates, 1.5 * g / 2.0, rtol=1e-6)
    np.testing.assert_allclose(optax.apply_updates(g, updates), g + 1.5 * g / 2.0, rtol=1e-6)
    std_updates, _ = deepdream.normalized_ascent(1.0, "std").update(g, tx.init(g))
    np.testing.assert_allclose(std_updates, g / np.std(np.asarray(g)), rtol=1e-5)
    zero, _ = tx.update(jnp.zeros(3), tx.init(jnp.zeros(3)))
    assert np.all(np.asarray(zero) == 0)


@pytest.mark.slow
def test_an_octave_is_one_compiled_call_whatever_its_steps(params):
    """All of an octave's steps run inside one executable (a loop), compiled once
    for any step count; a level's program is shared by every octave count that
    gives it the same level below, and more steps keep ascending."""
    image = _photo(size=(104, 88))
    before = _value(params, image, LAYER)
    config = FAST.replace(step_size=1.25)  # a compilation of this test's own
    from dream_jax.engine import compile_cache
    compiled = len(compile_cache._compiled)
    outs = [dream(image, LAYER, params, config=config.replace(iter_n=n)) for n in (1, 7)]
    assert len(compile_cache._compiled) == compiled + 1  # the full size, alone
    dream(image, LAYER, params, config=config.replace(octave_n=2))
    # the smaller level alone, and the full size with the detail from below
    assert len(compile_cache._compiled) == compiled + 3
    dream(image, LAYER, params, config=config.replace(octave_n=3, iter_n=4))
    assert len(compile_cache._compiled) == compiled + 5  # the smallest, the middle one
    assert before < _value(params, outs[0], LAYER) < _value(params, outs[1], LAYER)


@pytest.mark.slow
def test_bfloat16_stays_within_the_stated_tolerance_of_float32(params):
    """BUILD_NOTES' tolerance for --precision=bfloat16: each step's gradient has
    cosine >= 0.95 to float32's, and a 3-step dream's change correlates >= 0.75
    with float32's (a different seed: ~0.07)."""
    image = _photo()
    o = objectives.as_objective(LAYER)
    x = _model(image)
    grad = jax.grad(deepdream.objective_value, argnums=1)
    g32 = grad(params, x, jnp.asarray(o.weights), {}, o.terms, "native")
    g16 = grad(jax.tree.map(lambda p: p.astype(jnp.bfloat16), params), x,
               jnp.asarray(o.weights), {}, o.terms, "native")
    assert g16.dtype == jnp.float32
    assert float(jnp.vdot(g32, g16) / jnp.linalg.norm(g32) / jnp.linalg.norm(g16)) >= 0.95
    config = FAST.replace(iter_n=3)
    changes = [dream(image, LAYER, params, config=config.replace(precision=p)).astype(float)
               - image for p in config_lib.PRECISIONS]
    assert np.corrcoef(changes[0].ravel(), changes[1].ravel())[0, 1] >= 0.75


@pytest.mark.slow
@pytest.mark.parametrize("kernels", ["custom", "native"])
def test_custom_and_native_kernels_dream_alike(params, kernels):
    """Both gradient paths of the Caffe ops give the same dream (within float noise)."""
    image = _photo()
    reference = dream(image, LAYER, params, config=FAST.replace(kernels="native"))
    out = dream(image, LAYER, params, config=FAST.replace(kernels=kernels))
    assert np.abs(out.astype(int) - reference).max() <= 1
