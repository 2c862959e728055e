"""Inputs within bounds: every allocation sized first, outputs never replacing
inputs, only the listed raster formats, the sha256 of the bytes decoded, names
in errors escaped, paths too long refused before the work (BUILD_NOTES: threat
model). Each test covers a class (every role a file can have, every spelling of
the same file); none dreams with the real network.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dream_jax import api, errors, render
from dream_jax.model import classify
from dream_jax.io import image_io
from dream_jax.engine.config import DreamConfig
from dream_jax.errors import ImageError, UserError
from tests.conftest import assert_one_line_error, run_main
from tests.test_untrusted_files import _photo

NO_WEIGHTS = "--weights=/nonexistent"
CONFIG = DreamConfig(octave_n=1, iter_n=1)


# --- memory: every allocation sized and checked first --------------------------------

@pytest.mark.parametrize("shape", [(1, 2000), (2000, 1), (1, 200_000), (3, 70_000)])
def test_classify_resamples_only_the_crop(shape):
    rgb = np.zeros((*shape, 3), np.uint8)
    start = time.perf_counter()
    assert classify.center_crop_input(rgb).shape == (224, 224, 3)
    assert time.perf_counter() - start < 5  # the old path needed up to ~39 GiB here


def test_classify_crop_matches_scaling_then_cropping():
    rgb = np.random.default_rng(0).integers(0, 256, (300, 451, 3), dtype=np.uint8)
    scaled = np.asarray(Image.fromarray(rgb).resize((385, 256), Image.BILINEAR))
    crop = scaled[16:240, 80:304].astype(int)
    assert np.abs(classify.center_crop_input(rgb).astype(int) - crop).max() <= 1


def test_sizes_past_the_machine_are_refused_before_allocating(tmp_path, monkeypatch):
    monkeypatch.setattr(image_io, "physical_memory", lambda: 1 << 20)
    with pytest.raises(UserError, match="would need"):
        render.DreamRequest(noise_size=1000, max_pixels=10**13)
    photo = _photo(tmp_path / "p.png", size=(300, 300))
    with pytest.raises(ImageError, match="would need"):
        image_io.decode_file(photo, max_pixels=10**13)
    proc = run_main("dream", NO_WEIGHTS, "--noise_size=10000000", "--max_pixels=10000000000000000",
                    f"--output={tmp_path / 'o.png'}")
    assert_one_line_error(proc, "would need")


@pytest.mark.parametrize("flag", ["--jitter=2147483648", "--tile_size=99999999999",
                                  "--memory_budget=99999999999"])
def test_numbers_jax_cannot_hold_are_one_line(tmp_path, flag):
    assert_one_line_error(run_main("dream", NO_WEIGHTS, flag, f"--output={tmp_path / 'o.png'}"),
                          "must be <=")


# --- outputs never replace inputs ----------------------------------------------------

@pytest.mark.parametrize("spelling", ["same", "dot", "hardlink", "symlink"])
@pytest.mark.parametrize("role", ["input", "mask", "guide"])
def test_the_output_is_never_an_input(tmp_path, spelling, role):
    photo = _photo(tmp_path / "x.png")
    before = photo.read_bytes()
    out = {"same": photo, "dot": tmp_path / "." / "x.png", "hardlink": tmp_path / "h.png",
           "symlink": tmp_path / "s.png"}[spelling]
    if spelling == "hardlink":
        os.link(photo, out)
    elif spelling == "symlink":
        out.symlink_to(photo)
    args = {"input": [f"--input={photo}"], "mask": [f"--input={_photo(tmp_path / 'i.png')}",
                                                    f"--mask={photo}"],
            "guide": ["--objective=guide(inception_3a/output)", f"--guide={photo}"]}[role]
    proc = run_main("dream", NO_WEIGHTS, *args, f"--output={out}")
    assert_one_line_error(proc, "refusing to overwrite")
    assert photo.read_bytes() == before


# --- inputs: formats, the bytes that were decoded, names in errors ------------------

def _save_as(path: Path, fmt: str) -> Path:
    Image.new("RGB", (32, 32), "gray").save(path, fmt)
    return path


@pytest.mark.parametrize("fmt", ["TGA", "PCX", "SGI", "ICO", "DDS", "QOI"])
@pytest.mark.parametrize("role", ["input", "mask", "guide"])
def test_formats_outside_the_list_are_refused_in_every_role(tmp_path, fmt, role):
    other = _save_as(tmp_path / "other.png", fmt)  # named .png: the bytes decide
    assert Image.open(other).format == fmt  # Pillow itself would read it
    photo = _photo(tmp_path / "p.png")
    args = {"input": [f"--input={other}"], "mask": [f"--input={photo}", f"--mask={other}"],
            "guide": [f"--input={photo}", "--objective=guide(inception_3a/output)",
                      f"--guide={other}"]}[role]
    proc = run_main("dream", NO_WEIGHTS, *args, f"--output={tmp_path / 'o.png'}")
    assert_one_line_error(proc, str(other), "not an image in a format dream_jax reads")


@pytest.mark.parametrize("fmt", image_io.FORMATS)
def test_every_listed_format_reads(tmp_path, fmt):
    path = _save_as(tmp_path / f"p.{fmt.lower()}", fmt)
    assert image_io.decode_file(path).rgb.shape == (32, 32, 3)


def test_the_record_holds_the_sha256_of_the_bytes_decoded(tmp_path, monkeypatch):
    photo = _photo(tmp_path / "in.png")
    original = image_io.decode_file(photo).sha256
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "manifest.json").write_text(json.dumps({"sha256": "0" * 64}))

    def dream_then_change_the_input(params, images, *args, **kwargs):
        _photo(photo, seed=5)  # the file changes while the dream runs
        return np.asarray(images)
    monkeypatch.setattr(api, "dream_pixels", dream_then_change_the_input)
    request = render.DreamRequest(input=str(photo), config=CONFIG, objective="inception_3a/output")
    render.render(request, tmp_path / "o.png", params={}, weights_dir=tmp_path / "w",
                  progress=False)
    rec = json.loads(image_io.read_png_metadata(tmp_path / "o.png")[render.METADATA_KEY])
    assert rec["input_sha256"] == original != image_io.decode_file(photo).sha256


@pytest.mark.parametrize("name", ["new\nline.png", "tab\there.png", "esc\x1b[31m.png",
                                  "sep\u2028.png"])
def test_a_name_with_control_characters_stays_one_escaped_line(tmp_path, name):
    proc = run_main("dream", NO_WEIGHTS, f"--input={tmp_path / name}",
                    f"--output={tmp_path / 'o.png'}")
    assert_one_line_error(proc, "no such file", errors.one_line(str(tmp_path / name)))
    assert "\\" in errors.one_line(name)


@pytest.mark.parametrize("which", ["input_component", "input_path", "output_component",
                                   "output_path"])
def test_names_and_paths_too_long_are_one_line_before_any_work(tmp_path, which):
    long_part = "x" * 300
    deep = "/".join(["y" * 200] * 25)
    path = {"input_component": tmp_path / f"{long_part}.png",
            "input_path": tmp_path / deep / "p.png",
            "output_component": tmp_path / f"{long_part}.png",
            "output_path": tmp_path / deep / "o.png"}[which]
    args = ([f"--input={path}", f"--output={tmp_path / 'o.png'}"] if which.startswith("input")
            else [f"--output={path}"])
    assert_one_line_error(run_main("dream", NO_WEIGHTS, *args))


@pytest.mark.parametrize("values,expected", [((0.0, 1.0), (0, 255)), ((0.0, 0.5), (0, 128)),
                                             ((0.0, 200.0), (0, 200))])
def test_float_images_are_scaled_by_their_range(tmp_path, values, expected):
    grey = np.linspace(*values, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(grey, "F").save(tmp_path / "f.tif")
    rgb = image_io.decode_file(tmp_path / "f.tif").rgb
    assert (rgb.min(), rgb.max()) == expected


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0, 300.0])
def test_float_images_outside_0_255_are_refused(tmp_path, bad):
    grey = np.zeros((32, 32), np.float32)
    grey[3, 4] = bad
    Image.fromarray(grey, "F").save(tmp_path / "f.tif")
    with pytest.raises(ImageError, match="float image"):
        image_io.decode_file(tmp_path / "f.tif")


# --- scripts' other flags and folders ----------------------------------------------

def test_visualize_refuses_a_negative_batch(tmp_path):
    assert_one_line_error(run_main("visualize", NO_WEIGHTS, "--batch=-3",
                                   f"--output_dir={tmp_path}"), "batch must be >= 0")


@pytest.mark.parametrize("kind", ["file", "uncreatable"])
def test_zoom_output_dir_that_cannot_be_a_folder_is_one_line(tmp_path, kind):
    (tmp_path / "f").write_text("a file")
    folder = tmp_path / "f" if kind == "file" else tmp_path / "f" / "sub"
    assert_one_line_error(run_main("zoom", NO_WEIGHTS, f"--output_dir={folder}"))



@pytest.mark.parametrize("flag,fragment", [("--size=1000000", "size must be in"),
                                           ("--copies=100000000", "pixels in one call")])
def test_visualize_sizes_are_bounded_before_anything_is_allocated(tmp_path, flag, fragment):
    assert_one_line_error(run_main("visualize", NO_WEIGHTS, flag, f"--output_dir={tmp_path}"),
                          fragment)


def test_readers_on_several_threads_share_pillows_limit_safely(tmp_path, monkeypatch):
    """Pillow's pixel limit is process-wide: readers on several threads (the
    batch's read-ahead and the caller) never see it back on mid-decode, and the
    caller's own value is restored when the last one is done."""
    import threading

    from PIL import Image as PILImage
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # 64x64 is over twice that
    path = tmp_path / "p.png"
    PILImage.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    failures = []

    def read_many():
        for _ in range(30):
            try:
                image_io.read_image(path, 10_000)
            except Exception as e:  # noqa: BLE001 -- any failure is the finding
                failures.append(repr(e))
    threads = [threading.Thread(target=read_many) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    assert PILImage.MAX_IMAGE_PIXELS == 1000
