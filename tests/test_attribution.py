"""Attribution: deletion curves fall faster than random, integrated gradients
add up, samples batch like singles, small images are refused, outputs are
written as overlay + raw map."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dream_jax.workbench import attribution
from dream_jax.model import DEFAULT as NET, googlenet, preprocess
from dream_jax.io import image_io
from dream_jax import objectives
from dream_jax.errors import UserError
from tests.conftest import assert_one_line_error, compilations, run_main

LAYER = "inception_3a/output"


@pytest.fixture(scope="module")
def cat():
    from skimage import data
    return np.asarray(Image.fromarray(data.chelsea()).resize((96, 64), Image.BILINEAR))


def _busiest_channel(params, rgb):
    x = NET.to_model(rgb)[None]
    return int(np.asarray(googlenet.apply(params, x, (LAYER,))[LAYER][0].mean((0, 1))).argmax())


def test_deletion_curve_falls_faster_than_random(params, cat):
    """The contribution maps (signed: which pixels raise the objective) must beat
    random deletion at every fraction. Gradient magnitudes (gradient, smoothgrad)
    measure sensitivity, not contribution, and are not held to it (README)."""
    objective = objectives.channel(LAYER, _busiest_channel(params, cat))
    fractions = np.array([0, 0.01, 0.02, 0.05, 0.1, 0.2])
    rng = np.random.default_rng(0)
    random = np.mean([attribution.deletion_curve(params, cat, objective,
                                                 rng.random(cat.shape[:2]), fractions)
                      for _ in range(3)], axis=0)
    for method in attribution.SIGNED:
        saliency = attribution.attribute(params, cat, objective, method, steps=8)
        assert saliency.shape == cat.shape[:2]
        curve = attribution.deletion_curve(params, cat, objective, saliency, fractions)
        assert curve[0] == pytest.approx(random[0], rel=1e-5)  # nothing removed yet
        assert (curve[1:] < random[1:]).all(), (method, curve, random)
        assert curve.mean() < 0.7 * random.mean(), (method, curve, random)


def test_integrated_gradients_add_up_to_the_change_from_the_baseline(params, cat):
    objective = objectives.channel(LAYER, _busiest_channel(params, cat))
    ig = attribution.attribute(params, cat, objective, "integrated_gradients", steps=64)
    grey = np.broadcast_to(NET.from_model(np.zeros(3, np.float32)),
                           cat.shape)
    terms = objectives.union_terms([objective])
    values = [float(attribution._values(params, jnp.asarray(NET.to_model(
        np.asarray(x)))[None], jnp.ones(1), terms=terms)[0])
        for x in (cat.astype(np.float32), grey)]
    assert ig.sum() == pytest.approx(values[0] - values[1], rel=0.05)


def test_a_batch_gives_each_image_its_own_map(params, cat):
    objective = f"channel({LAYER},3) + 0.5*neuron({LAYER},7)"
    pair = np.stack([cat, cat[::-1, ::-1]])
    both = attribution.attribute(params, pair, objective, "integrated_gradients", steps=4)
    for i in range(2):
        alone = attribution.attribute(params, pair[i], objective, "integrated_gradients",
                                      steps=4)
        np.testing.assert_allclose(both[i], alone, rtol=1e-4, atol=1e-4 * np.abs(alone).max())
    noiseless = attribution.attribute(params, cat, objective, "smoothgrad", steps=3, noise=0.0)
    np.testing.assert_allclose(noiseless, attribution.attribute(params, cat, objective,
                                                                "gradient"), rtol=1e-5)


def test_class_logits_of_a_small_image_are_nan_and_refused(params, tmp_path):
    small = np.random.default_rng(0).integers(0, 255, (217, 300, 3), dtype=np.uint8)
    logits = googlenet.apply(params, preprocess.to_model(small)[None],
                             (googlenet.CLASSIFIER_LAYER,))[googlenet.CLASSIFIER_LAYER]
    assert np.isnan(np.asarray(logits)).all()  # what the refusal protects from
    with pytest.raises(UserError, match="300x217 is too small for loss3/classifier"):
        attribution.attribute(params, small, "class(1)", "gradient")
    image_io.write_png(tmp_path / "small.png", small)
    proc = run_main("attribute", f"--input={tmp_path / 'small.png'}", "--objective=class(1)",
                    f"--output={tmp_path / 'map.png'}", "--weights=/nonexistent")
    assert_one_line_error(proc, "300x217 is too small for loss3/classifier")
    assert not list(tmp_path.glob("map*"))


@pytest.mark.parametrize("args, fragment", [
    (["--objective=diversity(inception_3a/output)"], "cannot be attributed"),
    (["--objective=chanel(inception_3a/output,1)"], "unknown objective function"),
    (["--method=saliency"], "flag --method"),
    (["--output={tmp}/map.jpg"], "must be a .png"),
    (["--input={tmp}/missing.png"], "no such file"),
])
def test_bad_input_is_one_line(tmp_path, args, fragment):
    image_io.write_png(tmp_path / "in.png", np.zeros((64, 64, 3), np.uint8))
    defaults = {"--input": f"{tmp_path}/in.png", "--objective": f"channel({LAYER},1)",
                "--output": f"{tmp_path}/out.png"}
    args = [a.format(tmp=tmp_path) for a in args]
    given = {a.split("=")[0] for a in args}
    args += [f"{k}={v}" for k, v in defaults.items() if k not in given]
    assert_one_line_error(run_main("attribute", *args, "--weights=/nonexistent"), fragment)


def test_script_writes_overlay_and_raw_map(weights_dir, cat, tmp_path):
    image_io.write_png(tmp_path / "cat.png", cat)
    proc = run_main("attribute", f"--input={tmp_path / 'cat.png'}",
                    f"--objective=channel({LAYER},10)", "--method=smoothgrad", "--steps=4",
                    f"--output={tmp_path / 'cat_sg.png'}", f"--weights={weights_dir}")
    assert proc.returncode == 0, proc.stderr
    raw = np.load(tmp_path / "cat_sg.npy")
    overlay = image_io.read_image(tmp_path / "cat_sg.png")[0]
    assert raw.shape == cat.shape[:2] and overlay.shape == cat.shape and (raw >= 0).all()
    text = image_io.read_png_metadata(tmp_path / "cat_sg.png")["dream_jax_map"]
    assert str(tmp_path) not in text and json.loads(text)["attribution"]["input"] == "cat.png"


def test_channels_as_data_give_what_the_objective_gives(params, cat):
    pair = np.stack([cat, cat[::-1]])
    for method in ("grad_x_input", "smoothgrad"):
        both = attribution.attribute_channels(params, pair, LAYER, [3, 40], method, steps=2)
        for i, c in enumerate((3, 40)):
            alone = attribution.attribute(params, pair[i:i + 1], objectives.channel(LAYER, c),
                                          method, steps=2)[0]
            if method == "grad_x_input":  # smoothgrad's noise is drawn per batch position
                np.testing.assert_allclose(both[i], alone, rtol=1e-4,
                                           atol=1e-4 * np.abs(alone).max())
            assert both[i].shape == cat.shape[:2] and np.isfinite(both[i]).all()


def test_a_new_channel_or_class_reuses_the_compiled_attribution(params, cat):
    """Indices are data: only the objective's structure compiles."""
    attribution.attribute(params, cat, f"channel({LAYER},1)", method="gradient")
    with compilations() as compiled:
        for objective in (f"channel({LAYER},2)", f"channel({LAYER},40)", f"0.3*channel({LAYER},5)"):
            attribution.attribute(params, cat, objective, method="gradient")
    assert not [name for name in compiled if "attribution_maps" in name], compiled
