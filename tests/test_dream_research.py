"""The research side of dreams: image penalties, feature accentuation, Laplacian
normalisation, optax optimisers by name, region masks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import dream_jax
from dream_jax.engine import deepdream, lapnorm
from dream_jax import objectives, render
from dream_jax.model import DEFAULT as NET, preprocess
from dream_jax.engine.config import DreamConfig
from dream_jax.errors import UserError
from tests.conftest import assert_one_line_error, run_main, smooth_photo

LAYER = "inception_3a/output"  # shallow: quick to compile on 2 cores
FAST = DreamConfig(octave_n=1, iter_n=3)


def _photo(seed=0, size=(64, 96)):
    return smooth_photo(seed, size)


def _value_and_grad(text, image, reference=None):
    objective = objectives.parse(text)
    def value(x):
        acts = {objectives.INPUT: x}
        if reference is not None:
            acts[objectives.REFERENCE] = reference
        return objectives.evaluate(objective.terms, objective.weights, acts, {})
    return jax.value_and_grad(value)(jnp.asarray(image, jnp.float32))


# --- the image terms, by hand ---

def test_total_variation_by_hand():
    image = np.zeros((2, 3, 1), np.float32)
    image[0, 1] = 3.0  # one bright pixel: 2 horizontal and 1 vertical differences of 3
    value, grad = _value_and_grad("tv()", image)
    # mean |dy| over (1, 3, 1) = 3/3; mean |dx| over (2, 2, 1) = 6/4
    assert float(value) == pytest.approx(1.0 + 1.5)
    assert float(grad[0, 1, 0]) == pytest.approx(1 / 3 + 2 / 4)
    assert float(grad[1, 1, 0]) == pytest.approx(-1 / 3)


def test_image_norms_by_hand():
    image = np.array([[[1.0, -2.0, 3.0], [0.5, -0.5, -3.0]]], np.float32)  # (1, 2, 3)
    value, grad = _value_and_grad("image_l1()", image)
    assert float(value) == pytest.approx(10 / 6)
    np.testing.assert_allclose(grad, np.sign(image) / 6)
    value, grad = _value_and_grad("image_l2()", image)
    assert float(value) == pytest.approx(0.5 * 23.5 / 6)
    np.testing.assert_allclose(grad, image / 6, rtol=1e-6)


def test_input_distance_by_hand():
    image = np.full((2, 2, 3), 5.0, np.float32)
    reference = np.full((2, 2, 3), 3.0, np.float32)
    value, grad = _value_and_grad("input_distance()", image, reference)
    assert float(value) == pytest.approx(4.0)
    np.testing.assert_allclose(grad, np.full((2, 2, 3), 2 * 2.0 / 12), rtol=1e-6)


def test_blur_moves_the_image_towards_its_blur():
    image = np.zeros((5, 5, 1), np.float32)
    image[2, 2] = 9.0  # a spike: the 3x3 box blur spreads it to 1.0 over 9 pixels
    value, grad = _value_and_grad("blur()", image)
    blurred = np.zeros((5, 5, 1), np.float32)
    blurred[1:4, 1:4] = 1.0
    assert float(value) == pytest.approx(0.5 * np.mean((image - blurred) ** 2))
    np.testing.assert_allclose(grad, (image - blurred) / image.size, rtol=1e-6)
    # a descent step on blur() lowers the spike and raises its neighbours
    assert grad[2, 2, 0] > 0 and grad[1, 1, 0] < 0


def test_diversity_by_hand():
    """Two images with orthogonal Gram matrices score 0; identical ones -1."""
    a = np.zeros((2, 2, 2, 2), np.float32)
    a[0, ..., 0] = 1.0  # image 0 fires channel 0 only, image 1 channel 1 only
    a[1, ..., 1] = 1.0
    term = objectives.Diversity(LAYER)
    np.testing.assert_allclose(term.contributions({LAYER: a}), [0.0, 0.0], atol=1e-6)
    same = np.stack([a[0], a[0], a[0]])
    np.testing.assert_allclose(term.contributions({LAYER: same}), [-1.0] * 3, atol=1e-6)
    assert float(term.contributions({LAYER: a[:1]})[0]) == 0.0  # alone: nothing to differ from


def test_evaluate_batch_adds_batch_terms_to_per_image_terms():
    acts = {LAYER: jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 2, 4)), jnp.float32)}
    objective = objectives.parse(f"mean({LAYER}) + 0.5*diversity({LAYER})")
    weights = jnp.asarray(objectives.weight_matrix([objective] * 3, objective.terms))
    values = objectives.evaluate_batch(objective.terms, weights, acts, {})
    expected = (jnp.mean(acts[LAYER], axis=(1, 2, 3))
                + 0.5 * objectives.Diversity(LAYER).contributions(acts))
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_image_terms_need_a_network_term_to_dream(params):
    with pytest.raises(UserError, match="reads no network layer"):
        dream_jax.dream(_photo(), "-0.1*tv()", params=params, config=FAST)


def test_diversity_is_refused_in_a_dream(params):
    with pytest.raises(UserError, match="compares the images of a batch"):
        dream_jax.dream(_photo(), f"{LAYER} + diversity({LAYER})", params=params, config=FAST)


# --- Laplacian normalisation ---

@pytest.mark.parametrize("shape", [(37, 50, 3), (64, 64, 3), (17, 9, 3)])
def test_laplacian_split_merges_back(shape):
    image = jax.random.normal(jax.random.PRNGKey(1), shape)
    bands = lapnorm.split(image)
    assert len(bands) == lapnorm.LEVELS + 1 and bands[-1].shape == shape
    np.testing.assert_allclose(lapnorm.merge(bands), image, atol=1e-5)


def test_laplacian_normalisation_is_scale_free_and_flattens_bands():
    g = jax.random.normal(jax.random.PRNGKey(2), (48, 64, 3))
    np.testing.assert_allclose(lapnorm.normalize(7.0 * g), lapnorm.normalize(g), atol=1e-5)
    # a strong smooth gradient with faint pixel noise: its bands' RMS spread 5x;
    # normalised, every band weighs about the same (re-splitting mixes them a little)
    y, x = jnp.mgrid[:48, :64] / 64.0
    g = 100.0 * jnp.stack([jnp.sin(3 * x + 2 * y)] * 3, -1) + 0.01 * g

    def spread(v):
        rms = [float(jnp.sqrt(jnp.mean(b * b))) for b in lapnorm.split(v)]
        return max(rms) / min(rms)
    assert spread(g) > 4 and spread(lapnorm.normalize(g)) < 2


def test_lapnorm_dream_raises_the_objective(params):
    image = _photo()
    config = FAST.replace(normalize="lapnorm")
    out = dream_jax.dream(image, LAYER, params=params, config=config)
    assert np.abs(out.astype(int) - image).mean() > 1
    before, after = (float(deepdream.objective_value(
        params, jnp.asarray(preprocess.to_model(x, preprocess.DREAM_MEAN_BGR)),
        jnp.ones(1), {}, objectives.parse(LAYER).terms, "native")) for x in (image, out))
    assert after > before


# --- feature accentuation ---

def test_input_distance_keeps_a_dream_close_to_its_photo(params):
    image = _photo()
    target = f"channel({LAYER},5)"
    free = dream_jax.dream(image, target, params=params, config=FAST)
    kept = dream_jax.dream(image, f"{target} - 5*input_distance()", params=params, config=FAST)
    far, near = (np.abs(x.astype(int) - image).mean() for x in (free, kept))
    assert near < 0.7 * far, (near, far)
    assert near > 0  # still dreams


# --- masks and regions ---

def _half_mask(shape, left_white: bool):
    mask = np.zeros(shape[:2], np.uint8)
    if left_white:
        mask[:, : shape[1] // 2] = 255
    else:
        mask[:, shape[1] // 2:] = 255
    return mask


def test_masked_dream_leaves_black_regions_as_the_input(params):
    image = _photo()
    mask = _half_mask(image.shape, left_white=False)
    out = dream_jax.dream(image, LAYER, params=params, config=FAST.replace(octave_n=2), mask=mask)
    half = image.shape[1] // 2
    assert np.abs(out[:, :half].astype(int) - image[:, :half]).max() <= 1
    assert np.abs(out[:, half:].astype(int) - image[:, half:]).mean() > 2


def test_grey_mask_blends_between_input_and_dream(params):
    image = _photo()
    dreamed = dream_jax.dream(image, LAYER, params=params, config=FAST)
    grey = dream_jax.dream(image, LAYER, params=params, config=FAST,
                           mask=np.full(image.shape[:2], 0.25, np.float32))
    change, quarter = (np.abs(x.astype(int) - image).mean() for x in (dreamed, grey))
    assert 0.1 * change < quarter < 0.5 * change  # the step is normalised, so not exactly 1/4


def test_regions_dream_their_own_objectives(params):
    image = _photo()
    left, right = (_half_mask(image.shape, side) for side in (True, False))
    a, b = f"channel({LAYER},5)", f"channel({LAYER},100)"
    both = dream_jax.dream(image, params=params, config=FAST, regions=[(left, a), (right, b)])
    swapped = dream_jax.dream(image, params=params, config=FAST, regions=[(left, b), (right, a)])
    half = image.shape[1] // 2
    for side in (slice(None, half), slice(half, None)):
        assert np.abs(both[:, side].astype(int) - image[:, side]).mean() > 1
        assert np.abs(both[:, side].astype(int) - swapped[:, side]).mean() > 1

    def value(x, text, side):
        acts = NET.apply(params, jnp.asarray(preprocess.to_model(
            x[:, side], preprocess.DREAM_MEAN_BGR))[None], (LAYER,))[LAYER][0]
        return float(jnp.mean(acts[..., int(text.split(",")[1][:-1])]))
    # each half drives its own channel harder than when it dreamed the other one
    assert value(both, a, slice(None, half)) > value(swapped, a, slice(None, half))
    assert value(both, b, slice(half, None)) > value(swapped, b, slice(half, None))


def test_mask_of_the_wrong_rank_is_refused(params):
    with pytest.raises(UserError, match="2-D greyscale"):
        dream_jax.dream(_photo(), LAYER, params=params, config=FAST,
                        mask=np.zeros((2, 2, 2, 2)))


def test_region_flag_syntax():
    assert render.parse_region("C:/masks/sky.png:channel(x,1)") == ("C:/masks/sky.png",
                                                                    "channel(x,1)")
    for bad in ("sky.png", ":inception_4c/output", "sky.png: "):
        with pytest.raises(UserError, match="MASK.png:OBJECTIVE"):
            render.parse_region(bad)


def test_masked_dream_from_the_script_replays(tmp_path, weights_dir):
    image = _photo(size=(48, 64))
    Image.fromarray(image).save(tmp_path / "in.png")
    Image.fromarray(_half_mask(image.shape, left_white=True)).save(tmp_path / "left.png")
    Image.fromarray(_half_mask(image.shape, left_white=False)).save(tmp_path / "right.png")
    common = ["--octaves=1", "--steps=2", f"--weights={weights_dir}"]
    proc = run_main("dream", "--input=in.png", "--mask=left.png",
                    f"--region=right.png:channel({LAYER},7)", "--output=out.png", *common,
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    again = run_main("dream", "--replay=out.png", "--output=again.png",
                     f"--weights={weights_dir}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "out.png").read_bytes()
    proc = run_main("dream", "--input=in.png", "--region=right.png", *common, cwd=tmp_path)
    assert_one_line_error(proc, "MASK.png:OBJECTIVE")
    proc = run_main("dream", "--input=in.png", "--mask=missing.png", *common, cwd=tmp_path)
    assert_one_line_error(proc, "missing.png")


# --- optax optimisers by name ---

def test_sgd_on_the_normalised_gradient_is_the_normalised_step(params):
    image = _photo()
    ours = dream_jax.dream(image, LAYER, params=params, config=FAST)
    sgd = dream_jax.dream(image, LAYER, params=params, config=FAST.replace(optimizer="sgd"))
    assert np.abs(ours.astype(int) - sgd.astype(int)).max() <= 1


def test_adam_with_a_schedule_dreams(params):
    image = _photo()
    config = FAST.replace(optimizer="adam", schedule="cosine", iter_n=4)
    out = dream_jax.dream(image, f"channel({LAYER},5)", params=params, config=config)
    before, after = (float(deepdream.objective_value(
        params, jnp.asarray(preprocess.to_model(x, preprocess.DREAM_MEAN_BGR)),
        jnp.ones(1), {}, objectives.parse(f"channel({LAYER},5)").terms, "native"))
        for x in (image, out))
    assert after > before


@pytest.mark.parametrize("fields,message", [
    (dict(optimizer="adamm"), "optimizer must be one of normalized, adam"),
    (dict(schedule="cosine"), "needs an optax --optimizer"),
    (dict(optimizer="adam", schedule="linear"), "schedule must be one of constant"),
])
def test_bad_optimizer_settings_are_refused(fields, message):
    with pytest.raises(UserError, match=message):
        DreamConfig(**fields)
