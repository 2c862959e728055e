"""The dream engine: steps ascend, batches equal singles, seeds, octaves, tiles, NaN guard."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dream_jax
from dream_jax import dream, objectives, preprocess
from dream_jax.errors import UserError

LAYER = "inception_3b/output"  # shallow enough to be quick on 2 CPU cores
FAST = dream.DreamConfig(octave_n=1, iter_n=2)


def _photo(seed=0, size=(96, 112)):
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3)).astype(np.uint8)
    from PIL import Image
    return np.asarray(Image.fromarray(smooth).resize(size[::-1], Image.BICUBIC))


def _value(params, rgb_or_model, objective, model_space=False):
    image = rgb_or_model if model_space else preprocess.to_model(rgb_or_model)
    o = objectives.as_objective(objective)
    return float(dream._objective_value(params, jnp.asarray(image), jnp.asarray(o.weights), {},
                                        o.terms))


@pytest.mark.parametrize("objective", [LAYER, f"channel({LAYER},5)", "mean(conv2/norm2)"])
def test_steps_increase_the_objective(params, objective):
    image = _photo()
    before = _value(params, image, objective)
    after = _value(params, dream.dream(image, objective, params, config=FAST), objective)
    assert after > before


@pytest.mark.slow
def test_batch_equals_single_runs(params):
    images = np.stack([_photo(s) for s in range(3)])
    o = objectives.parse(LAYER)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in (5, 6, 7)])
    weights = jnp.ones((3, 1))
    batched = dream.dream_octave(params, preprocess.to_model(images), weights, {}, keys,
                                 FAST.iter_n, o.terms, FAST.step)
    for i in range(3):
        single = dream.dream_octave(params, preprocess.to_model(images[i:i + 1]), weights[:1],
                                    {}, keys[i:i + 1], FAST.iter_n, o.terms, FAST.step)
        np.testing.assert_allclose(batched[i], single[0], atol=1e-3, rtol=1e-4)


@pytest.mark.slow
def test_images_times_objectives_in_one_call_match_singles(params):
    images = np.stack([_photo(0), _photo(1)])
    objective_list = [LAYER, f"channel({LAYER},9)"]
    grid = dream_jax.dream(images, objective_list, params, config=FAST, seed=3)
    assert grid.shape == (2, 2, 96, 112, 3) and grid.dtype == np.uint8
    single = dream_jax.dream(images[1], objective_list[1], params, config=FAST, seed=3)
    assert np.abs(grid[1, 1].astype(int) - single).max() <= 1


def test_same_seed_same_pixels_different_seed_different(params):
    image = _photo()
    a = dream.dream(image, LAYER, params, config=FAST, seed=1)
    b = dream.dream(image, LAYER, params, config=FAST, seed=1)
    c = dream.dream(image, LAYER, params, config=FAST, seed=2)
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)


def test_octave_shapes_follow_octave_scale():
    shapes = dream.octave_shapes(575, 1024, 4, 1.4)
    assert shapes == [(575, 1024), (411, 731), (294, 522), (210, 373)]
    assert dream.octave_shapes(100, 100, 3, 2.0) == [(100, 100), (50, 50), (25, 25)]


@pytest.mark.slow
def test_octaves_too_small_are_skipped_not_fatal(params):
    """class() needs pool5 (7x7 at inception_5b): 256 px fits, 256/1.4 = 183 px does not."""
    out = dream.dream(_photo(size=(256, 256)), "class(1)", params,
                      config=dataclasses.replace(FAST, octave_n=3))
    assert out.shape == (256, 256, 3)
    with pytest.raises(UserError, match="too small"):
        dream.dream(_photo(size=(96, 96)), "class(1)", params, config=FAST)


def _gradients(params, image, tile):
    o = objectives.parse("conv2/norm2")
    args = (params, jnp.asarray(image), jnp.ones(1), {}, jax.random.PRNGKey(3), o.terms)
    whole = jax.grad(dream._objective_value, argnums=1)(params, args[1], args[2], {}, o.terms)
    return np.asarray(whole), np.asarray(dream.tiled_gradient(*args, tile)), args


@pytest.mark.slow
def test_tiled_gradient_equals_whole_image_when_it_fits_one_tile(params):
    image = preprocess.to_model(_photo(size=(128, 128)))
    whole, tiled, _ = _gradients(params, image, 128)
    np.testing.assert_allclose(tiled, whole, atol=1e-6 * np.abs(whole).max())


@pytest.mark.slow
def test_tiled_gradient_matches_away_from_seams(params):
    """With several tiles, the gradient equals the whole-image gradient of the same
    (randomly rolled) image wherever the tile borders are out of reach."""
    image = preprocess.to_model(_photo(size=(256, 256)))
    _, tiled, args = _gradients(params, image, 128)
    shift = np.asarray(jax.random.randint(args[4], (2,), 0, jnp.array([128, 128])))
    rolled = jnp.roll(jnp.asarray(image), tuple(shift), axis=(0, 1))
    o = objectives.parse("conv2/norm2")
    whole = np.roll(np.asarray(jax.grad(dream._objective_value, argnums=1)(
        params, rolled, jnp.ones(1), {}, o.terms)), tuple(-shift), axis=(0, 1))
    # Seams sit at rolled rows/cols 0 and 128: keep pixels >= 40 px away from them.
    ys = (np.arange(256) + shift[0]) % 128
    xs = (np.arange(256) + shift[1]) % 128
    far = ((ys > 40) & (ys < 88))[:, None] & ((xs > 40) & (xs < 88))[None, :]
    # Each tile's objective is a mean over its own positions: 4 tiles -> 4x the gradient.
    scale = np.abs(whole[far]).max()
    np.testing.assert_allclose(tiled[far] / 4 / scale, whole[far] / scale, atol=1e-4)


def test_flat_black_image_never_produces_nan(params):
    black = np.zeros((96, 96, 3), np.uint8)
    for how in dream.NORMALIZERS:
        out = dream.dream(black, "neuron(conv1/7x7_s2, 0, 0, 0)", params,
                          config=dataclasses.replace(FAST, normalize=how))
        assert out.dtype == np.uint8 and np.isfinite(out).all()


@pytest.mark.slow
def test_guide_objective_pulls_towards_the_guide(params):
    image, guide = _photo(0), _photo(7, size=(80, 80))
    o = objectives.parse(f"guide({LAYER})")
    data = dream.guide_data(params, guide, o.terms)
    value = lambda rgb: float(dream._objective_value(  # noqa: E731
        params, jnp.asarray(preprocess.to_model(rgb)), jnp.ones(1), data, o.terms))
    out = dream.dream(image, o, params, config=FAST, guide=guide)
    assert value(out) > value(image)
    with pytest.raises(UserError, match="guide"):
        dream.dream(image, o, params, config=FAST)


@pytest.mark.parametrize("field,value", [("iter_n", 0), ("octave_n", 0), ("octave_scale", 1.0),
                                         ("octave_scale", float("nan")), ("step_size", -1.0),
                                         ("jitter", -1), ("normalize", "l1"),
                                         ("precision", "float16")])
def test_bad_config_is_refused(field, value):
    with pytest.raises(UserError, match=field.split("_")[0]):
        dataclasses.replace(dream.DreamConfig(), **{field: value}).validate()


@pytest.mark.parametrize("size", [1, 7, 16, 57, 100, 223, 224, 300, 517])
def test_map_extent_matches_the_network(size):
    from dream_jax import googlenet
    shapes = googlenet.layer_shapes(size, size + 1)
    for layer, shape in shapes.items():
        if shape is not None and len(shape) == 3:
            assert googlenet.map_extent(layer, size) == shape[0], layer
            assert googlenet.map_extent(layer, size + 1) == shape[1], layer


@pytest.mark.slow
def test_sizes_within_a_bucket_share_one_compilation(params):
    config = dataclasses.replace(FAST, bucket=64)
    dream.dream(_photo(size=(100, 90)), LAYER, params, config=config)
    compiled = dream.dream_octave._cache_size()
    out = dream.dream(_photo(size=(112, 70)), LAYER, params, config=config)
    assert out.shape == (112, 70, 3)
    assert dream.dream_octave._cache_size() == compiled


def test_bucket_padding_is_exact_when_the_size_is_already_a_multiple(params):
    image = _photo(size=(128, 64))
    padded = dream.dream(image, LAYER, params, config=dataclasses.replace(FAST, bucket=64))
    exact = dream.dream(image, LAYER, params, config=dataclasses.replace(FAST, bucket=0))
    np.testing.assert_array_equal(padded, exact)


def test_bucket_padding_never_changes_and_never_leaks(params):
    """Padding stays zero (model space), and the real region is dreamed as usual."""
    image = preprocess.to_model(_photo(size=(100, 90)))
    padded = jnp.pad(jnp.asarray(image)[None], ((0, 0), (0, 28), (0, 38), (0, 0)))
    o = objectives.parse(LAYER)
    out = np.asarray(dream.dream_octave(params, padded, jnp.ones((1, 1)), {},
                                        jax.random.PRNGKey(0)[None], FAST.iter_n, o.terms,
                                        FAST.step, valid=(100, 90)))
    assert np.all(out[0, 100:] == 0) and np.all(out[0, :, 90:] == 0)
    assert np.abs(out[0, :100, :90] - image).mean() > 1.0


@pytest.mark.slow
def test_an_octave_is_one_compiled_call_whatever_its_steps(params):
    """All of an octave's steps run inside one executable (a loop), compiled once
    for any step count, octave count or bucket, and more steps keep ascending."""
    image = _photo(size=(104, 88))
    before = _value(params, image, LAYER)
    config = dataclasses.replace(FAST, step_size=1.25)  # a compilation of this test's own
    calls = dream.dream_octave._cache_size()
    outs = [dream.dream(image, LAYER, params, config=dataclasses.replace(config, iter_n=n))
            for n in (1, 7)]
    dream.dream(image, LAYER, params, config=dataclasses.replace(config, octave_n=2, bucket=8))
    assert dream.dream_octave._cache_size() == calls + 2  # full size; the second octave
    assert before < _value(params, outs[0], LAYER) < _value(params, outs[1], LAYER)


@pytest.mark.slow
def test_bfloat16_stays_within_the_stated_tolerance_of_float32(params):
    """BUILD_NOTES' tolerance for --precision=bfloat16: each step's gradient has
    cosine >= 0.95 to float32's, and a 3-step dream's change correlates >= 0.75
    with float32's (a different seed: ~0.07)."""
    image = _photo()
    o = objectives.as_objective(LAYER)
    x = jnp.asarray(preprocess.to_model(image))
    grad = jax.grad(dream._objective_value, argnums=1)
    g32 = grad(params, x, jnp.asarray(o.weights), {}, o.terms)
    g16 = grad(jax.tree.map(lambda p: p.astype(jnp.bfloat16), params), x,
               jnp.asarray(o.weights), {}, o.terms)
    assert g16.dtype == jnp.float32
    assert float(jnp.vdot(g32, g16) / jnp.linalg.norm(g32) / jnp.linalg.norm(g16)) >= 0.95
    config = dataclasses.replace(FAST, iter_n=3)
    changes = [dream.dream(image, LAYER, params, config=dataclasses.replace(config, precision=p))
               .astype(float) - image for p in dream.PRECISIONS]
    assert np.corrcoef(changes[0].ravel(), changes[1].ravel())[0, 1] >= 0.75
