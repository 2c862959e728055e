"""One request, one set of engine inputs: the API, a rendered request, a batch and
a zoom turn regions, guide and keys into the engine's arguments the same way."""
import numpy as np
import pytest
from PIL import Image

import dream_jax
from dream_jax import objectives, render, zoom
from dream_jax.engine import inputs
from dream_jax.engine.config import DreamConfig
from dream_jax.errors import UserError
from dream_jax.io import image_io
from dream_jax.scale import batch
from tests.conftest import assert_one_line_error, run_main, smooth_photo

LAYER = "inception_3a/output"  # shallow: quick to compile on 2 cores
CONFIG = DreamConfig(octave_n=1, iter_n=2)
NO_WEIGHTS = "--weights=/nonexistent"  # an error must come before the weights are needed


def _files(tmp_path, size=(48, 64)):
    """An input photo, a mask white on its right half and one white on its left,
    both at half the photo's size (so each is resized to it)."""
    image = smooth_photo(0, size)
    Image.fromarray(image).save(tmp_path / "in.png")
    right = np.zeros((size[0] // 2, size[1] // 2), np.uint8)
    right[:, size[1] // 4:] = 255
    Image.fromarray(right).save(tmp_path / "right.png")
    Image.fromarray(255 - right).save(tmp_path / "left.png")
    return image


def test_api_render_and_batch_give_the_same_pixels_for_one_request(params, weights_dir,
                                                                  tmp_path):
    _files(tmp_path)
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "in.png").write_bytes((tmp_path / "in.png").read_bytes())
    second = f"channel({LAYER},7)"
    request = render.DreamRequest(input=str(tmp_path / "in.png"), objective=LAYER,
                                  config=CONFIG, seed=3, mask=str(tmp_path / "right.png"),
                                  regions=((str(tmp_path / "left.png"), second),))
    render.render(request, tmp_path / "rendered.png", params=params, weights_dir=weights_dir,
                  progress=False)
    rendered = image_io.read_image(tmp_path / "rendered.png")[0]
    batch.run_batch(str(tmp_path / "inputs"), str(tmp_path / "out"), request,
                    weights_dir=weights_dir, progress=False, log=lambda *a, **k: None)
    batched = image_io.read_image(tmp_path / "out" / "in.png")[0]
    rgb = image_io.read_image(tmp_path / "in.png")[0]
    right, left = (image_io.read_image(tmp_path / f"{n}.png")[0] for n in ("right", "left"))
    called = dream_jax.dream(rgb, LAYER, params=params, config=CONFIG, seed=3, mask=right,
                             regions=[(left, second)])
    np.testing.assert_array_equal(batched, rendered)
    np.testing.assert_array_equal(called, rendered)
    assert np.abs(rendered.astype(int) - rgb).mean() > 1  # it dreamed


def test_zoom_keeps_the_frame_where_the_mask_is_black(params, weights_dir, tmp_path):
    image = _files(tmp_path)
    proc = run_main("zoom", f"--weights={weights_dir}", f"--output_dir={tmp_path / 'z'}",
                    f"--input={tmp_path / 'in.png'}", f"--mask={tmp_path / 'right.png'}",
                    "--frames=2", "--zoom=1.1", "--octaves=1", "--steps=2",
                    f"--objective={LAYER}")
    assert proc.returncode == 0, proc.stderr
    frames = [image_io.read_image(tmp_path / "z" / f"frame_000{i}.png")[0] for i in (0, 1)]
    kept = slice(None, image.shape[1] // 2 - 2)  # clear of the resized mask's soft edge
    dreamed = slice(image.shape[1] // 2 + 2, None)
    for frame, start in zip(frames, (image, zoom.zoom_in(frames[0], 1.1))):
        assert np.abs(frame[:, kept].astype(int) - start[:, kept]).max() <= 1
        assert np.abs(frame[:, dreamed].astype(int) - start[:, dreamed]).mean() > 1


def test_zoom_refuses_a_guide_over_max_pixels_in_one_line(tmp_path):
    Image.fromarray(smooth_photo(1, (64, 64))).save(tmp_path / "guide.png")
    proc = run_main("zoom", NO_WEIGHTS, f"--output_dir={tmp_path / 'z'}", "--noise_size=40",
                    "--max_pixels=2000", "--octaves=1", f"--guide={tmp_path / 'guide.png'}",
                    f"--objective=guide({LAYER})")
    assert_one_line_error(proc, "guide.png", "over the limit of 2,000")
    assert not list((tmp_path / "z").glob("frame_*.png"))


def test_zoom_refuses_a_missing_mask_in_one_line(tmp_path):
    proc = run_main("zoom", NO_WEIGHTS, f"--output_dir={tmp_path / 'z'}", "--noise_size=40",
                    "--octaves=1", f"--mask={tmp_path / 'missing.png'}")
    assert_one_line_error(proc, "missing.png")


def test_a_plan_refuses_objectives_that_do_not_match_its_masks():
    one = objectives.parse(LAYER)
    mask = np.ones((8, 8), np.float32)
    with pytest.raises(UserError, match="1 region mask"):
        inputs.plan({}, [one], masks=[mask])
    with pytest.raises(UserError, match="1 region mask"):
        inputs.plan({}, [(one, one)], masks=[mask])
    with pytest.raises(UserError, match="need region masks"):
        inputs.plan({}, [(one,)])


def test_a_plans_masks_are_resized_to_each_batch_and_its_keys_are_one_per_image():
    one = objectives.parse(LAYER)
    mask = np.zeros((4, 6), np.uint8)
    mask[:, 3:] = 255
    plan = inputs.plan({}, [(one,)], masks=[mask])
    batch_ = plan.inputs(np.zeros((3, 8, 12, 3), np.uint8), [(one,)] * 3, np.array([0, 5]))
    assert batch_.masks.shape == (3, 8, 12, 1)
    assert batch_.masks[:, :, :5].max() == 0 and batch_.masks[:, :, 7:].min() == 1
    np.testing.assert_array_equal(np.asarray(batch_.keys), [[0, 5]] * 3)


def test_batch_dream_checks_every_regions_objective_before_dreaming(weights_dir, tmp_path):
    _files(tmp_path)
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "in.png").write_bytes((tmp_path / "in.png").read_bytes())
    proc = run_main("batch_dream", f"--weights={weights_dir}", f"--inputs={tmp_path / 'inputs'}",
                    f"--output_dir={tmp_path / 'out'}", f"--mask={tmp_path / 'right.png'}",
                    f"--region={tmp_path / 'left.png'}:class(1000)", f"--objective={LAYER}")
    assert_one_line_error(proc, "class 1000 out of range")
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize("shape", [(6, 8), (6, 8, 3)])
def test_a_grey_mask_file_blends_whatever_its_channels(shape):
    grey = np.full(shape, 128, np.uint8)  # how an RGB or L mask file decodes
    assert np.allclose(inputs.region_masks([grey], 6, 8), 128 / 255)
