"""The absl scripts end to end: outputs, metadata, replay, batches, zoom, bad flags."""
import json

import numpy as np
import pytest
from PIL import Image

from dream_jax.io import image_io
from dream_jax import render
from tests.conftest import QUICK_FLAGS as FAST, assert_one_line_error, run_main, run_script
from tests.conftest import save_noise as _save


def _dream(weights_dir, *args):
    """scripts/dream.py in this interpreter (see conftest.run_main)."""
    return run_main("dream", f"--weights={weights_dir}", *args)


@pytest.mark.slow
def test_default_input_dream_has_metadata_and_replays_bit_exactly(weights_dir, tmp_path):
    out = tmp_path / "noise.png"
    proc = run_script("dream", f"--weights={weights_dir}", f"--output={out}", "--noise_size=96",
                      *FAST)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out} (96x96)" in proc.stdout
    record = json.loads(image_io.read_png_metadata(out)[render.METADATA_KEY])
    assert record["request"]["config"]["iter_n"] == 2
    assert record["request"]["objective"] == "inception_3b/output"
    assert record["weights_sha256"] and record["version"]
    again = tmp_path / "again.png"
    proc = run_script("dream", f"--weights={weights_dir}", f"--replay={out}",
                      f"--output={again}")  # another process
    assert proc.returncode == 0, proc.stderr
    assert again.read_bytes() == out.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_replay_refuses_a_changed_input(weights_dir, tmp_path):
    photo = _save(tmp_path / "in.png")
    out = tmp_path / "out.png"
    assert _dream(weights_dir, f"--input={photo}", f"--output={out}", *FAST).returncode == 0
    _save(photo, seed=1)
    proc = _dream(weights_dir, f"--replay={out}", f"--output={tmp_path / 'r.png'}")
    assert_one_line_error(proc, "changed")
    assert not (tmp_path / "r.png").exists()


@pytest.mark.slow
def test_alpha_is_kept(weights_dir, tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = tmp_path / "out.png"
    assert _dream(weights_dir, f"--input={tmp_path / 'a.png'}", f"--output={out}",
                  *FAST).returncode == 0
    with Image.open(out) as img:
        assert img.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(img)[..., 3], rgba[..., 3])


@pytest.mark.parametrize("flag,fragment", [
    ("--steps=-1", "steps"),
    ("--steps=0", "iter_n"),
    ("--octave_scale=1.0", "octave_scale"),
    ("--octave_scale=nan", "octave_scale"),
    ("--step_size=inf", "step_size"),
    ("--objective=inception_9z/output", "unknown layer"),
    ("--objective=channel(inception_4c/output,600)", "out of range"),
    ("--objective=inception_4c/output +", "operator"),
    ("--objective=guide(inception_4c/output)", "--guide"),
    ("--output=/nonexistent-dir/out.png", "does not exist"),
    ("--output=out.jpg", ".png"),
    ("--normalize=l1", "normalize"),
    ("--precision=float16", "precision"),
])
def test_bad_flags_fail_in_one_line_without_output(weights_dir, tmp_path, flag, fragment):
    args = [f"--output={tmp_path / 'out.png'}", "--noise_size=64", *FAST]
    proc = run_main("dream", f"--weights={weights_dir}", *args, flag, cwd=tmp_path)
    assert_one_line_error(proc, fragment)
    assert not list(tmp_path.iterdir())


def test_tiny_image_is_refused(weights_dir, tmp_path):
    _save(tmp_path / "tiny.png", size=(1, 1))
    proc = run_main("dream", f"--weights={weights_dir}", f"--input={tmp_path / 'tiny.png'}",
                    f"--output={tmp_path / 'o.png'}")
    assert_one_line_error(proc, "tiny.png", "too small")


@pytest.mark.slow
def test_batch_dream_groups_resumes_and_reports(weights_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        _save(inputs / f"p{i}.png", seed=i)
    _save(inputs / "other.png", size=(64, 64))
    (inputs / "broken.jpg").write_text("not an image")
    out = tmp_path / "out"
    args = [f"--weights={weights_dir}", f"--inputs={inputs}", f"--output_dir={out}",
            "--batch_size=2", *FAST]
    proc = run_main("batch_dream", *args)
    assert proc.returncode == 1, proc.stderr  # one input was broken
    assert "done 4, skipped 0 (already there), failed 1" in proc.stdout
    assert "broken.jpg" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["other.png", "p0.png", "p1.png", "p2.png"]
    first = (out / "p1.png").read_bytes()
    (inputs / "broken.jpg").unlink()
    proc = run_main("batch_dream", *args)
    assert proc.returncode == 0, proc.stderr
    assert "done 0, skipped 4" in proc.stdout
    assert (out / "p1.png").read_bytes() == first
    # A batched output is what the same image gives alone.
    alone = tmp_path / "alone.png"
    assert _dream(weights_dir, f"--replay={out / 'p1.png'}", f"--input={inputs / 'p1.png'}",
                  f"--output={alone}").returncode == 0
    assert alone.read_bytes() == first


@pytest.mark.slow
def test_zoom_writes_frames_and_gif(weights_dir, tmp_path):
    proc = run_main("zoom", f"--weights={weights_dir}", f"--output_dir={tmp_path}",
                      "--frames=2", "--noise_size=64", "--gif", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame_0000.png", "frame_0001.png",
                                                          "zoom.gif"]
    with Image.open(tmp_path / "zoom.gif") as gif:
        assert gif.n_frames == 2


def test_zoom_refuses_a_class_out_of_range_before_its_progress_bar(weights_dir, tmp_path):
    proc = run_main("zoom", f"--weights={weights_dir}", f"--output_dir={tmp_path}",
                    "--frames=2", "--noise_size=224", "--octaves=1", "--objective=class(1000)")
    assert_one_line_error(proc, "class 1000 out of range", "1000 classes")
    assert not list(tmp_path.glob("frame_*.png"))


def test_layers_script_lists_every_tap():
    proc = run_main("layers", "--height=300", "--width=517")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 84
    assert any(line.split() == ["inception_4c/output", "18x32x512"] for line in lines)


def test_kernels_environment_variable_is_the_flags_default(weights_dir, tmp_path):
    """$DREAM_JAX_KERNELS is read by the script (the edge), as --kernels' default;
    the flag on the command line still wins, and a bad value is one line."""
    def kernels_of(out, *args, env):
        proc = run_main("dream", f"--weights={weights_dir}", f"--output={out}",
                        "--noise_size=48", "--octaves=1", "--steps=1",
                        "--objective=conv2/3x3", *args, env=env)
        assert proc.returncode == 0, proc.stderr
        record = json.loads(image_io.read_png_metadata(out)[render.METADATA_KEY])
        return record["request"]["config"]["kernels"]

    assert kernels_of(tmp_path / "a.png", env={"DREAM_JAX_KERNELS": "native"}) == "native"
    assert kernels_of(tmp_path / "b.png", "--kernels=custom",
                      env={"DREAM_JAX_KERNELS": "native"}) == "custom"
    proc = run_main("dream", f"--weights={weights_dir}", f"--output={tmp_path / 'c.png'}",
                    env={"DREAM_JAX_KERNELS": "bogus"})
    assert_one_line_error(proc, "$DREAM_JAX_KERNELS")
    assert not (tmp_path / "c.png").exists()
