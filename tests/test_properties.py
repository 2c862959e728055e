"""Property-based tests (hypothesis) of the contract for any image and any flags:
either a valid output, or a `UserError` / one `error:` line and no file at all;
never a traceback, a hang or a partial file.

Dreaming costs a JIT compile per new image size (seconds), so the many-example
tests run the real pipeline in-process (reading, checks, writing, alpha) with
the engine's `deepdream` replaced by a cheap stand-in that also injects NaN and
Inf; a few examples run the real scripts end to end.
"""
from __future__ import annotations

import io
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from dream_jax.engine import deepdream as engine
from dream_jax.io import image_io
from dream_jax import render
from dream_jax.engine.config import DreamConfig
from dream_jax.errors import ImageError, UserError
from tests.conftest import ROOT

MODES = ["L", "P", "RGB", "RGBA", "LA", "I;16", "CMYK"]
NAN, INF = math.nan, math.inf


def _write_image(folder: Path, width: int, height: int, mode: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    elif mode == "RGBA":
        img = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    elif mode == "LA":
        img = Image.fromarray(rng.integers(0, 256, (height, width, 2), dtype=np.uint8), "LA")
    else:
        img = rgb.convert(mode)
    path = folder / ("input.jpg" if mode == "CMYK" else "input.png")  # PNG has no CMYK
    img.save(path)
    return path


def _one_of_mostly(valid, invalid):
    """Three draws in four from `valid`: most examples get past the flag checks
    (shrinking goes towards `valid`)."""
    return st.sampled_from([0, 1, 2, 3]).flatmap(lambda k: invalid if k == 3 else valid)


steps_st = _one_of_mostly(st.integers(1, 2), st.integers(-3, 0))
octaves_st = _one_of_mostly(st.integers(1, 3), st.sampled_from([0, -1, 60, 10**9]))
octave_scale_st = _one_of_mostly(st.floats(1.1, 2.5),
                                 st.sampled_from([1.0, 0.5, 0.0, -2.0, NAN, INF, 1e308]))
step_size_st = _one_of_mostly(st.floats(0.01, 4.0),
                              st.sampled_from([0.0, -1.5, NAN, INF, -INF]) | st.floats())
side_st = _one_of_mostly(st.integers(16, 120), st.integers(1, 15))  # 1..120, mostly >= 16


def _hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def _fake_deepdream(params, images, objective_list, config=None, keys=None, data=None,
                    on_octave=None, masks=None):
    """The real engine's contract (same shape, model space), with NaN and +-Inf
    pixels mixed in: what a diverging step could produce."""
    out = np.array(images, np.float32) * 1.5
    flat = out.reshape(-1)
    flat[::7] = np.nan
    flat[1::11] = np.inf
    flat[2::13] = -np.inf
    return out


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(width=side_st, height=side_st, mode=st.sampled_from(MODES), steps=steps_st,
       octaves=octaves_st, octave_scale=octave_scale_st, step_size=step_size_st,
       max_side=st.sampled_from([0, 0, 0, 48, 8]), seed=st.integers(0, 2**32 - 1))
@example(width=16, height=120, mode="LA", steps=1, octaves=1, octave_scale=1.4, step_size=1.5,
         max_side=0, seed=0)
@example(width=120, height=120, mode="I;16", steps=2, octaves=60, octave_scale=1.4,
         step_size=NAN, max_side=0, seed=1)
def test_render_gives_a_valid_png_or_one_user_error(params, weights_dir, width, height, mode,
                                                     steps, octaves, octave_scale, step_size,
                                                     max_side, seed):
    with tempfile.TemporaryDirectory() as tmp, \
            mock.patch.object(engine, "deepdream", _fake_deepdream):
        folder = Path(tmp)
        source = _write_image(folder, width, height, mode, seed % 1000)
        out_dir = folder / "out"
        out_dir.mkdir()
        output = out_dir / "dream.png"
        try:
            request = render.DreamRequest(
                input=str(source), objective="inception_3b/output", seed=seed, max_side=max_side,
                config=DreamConfig(octave_n=octaves, octave_scale=octave_scale, iter_n=steps,
                                   step_size=step_size))
            summary = render.render(request, output, params=params, weights_dir=weights_dir,
                                    progress=False)
        except UserError as e:
            event("refused: " + re.sub(r"/\S+|-?\d[\d.e+-]*|nan|inf", "#", str(e))[:60])
            message = str(e)
            assert message and "\n" not in message and len(message) < 2000, message
            assert not output.exists()
        else:
            event("dreamed")
            with Image.open(output) as img:
                img.verify()
            with Image.open(output) as img:
                img.load()
                assert img.size == (summary["width"], summary["height"])
                assert img.mode == ("RGBA" if mode in ("RGBA", "LA") else "RGB")
            assert min(img.size) >= render.MIN_SIDE
            if not max_side:
                assert img.size == (width, height)
        assert _hidden(out_dir) == [], "a temp file was left behind"


def _sample_file(kind: str) -> bytes:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    buf = io.BytesIO()
    if kind == "GIF":
        img.save(buf, "GIF", save_all=True, append_images=[img.rotate(90)])
    elif kind == "PNG-RGBA":
        img.convert("RGBA").save(buf, "PNG")
    else:
        img.save(buf, kind)
    return buf.getvalue()


SAMPLES = {kind: _sample_file(kind) for kind in ("PNG", "PNG-RGBA", "JPEG", "GIF", "BMP",
                                                 "TIFF", "WEBP")}


@settings(max_examples=1000, deadline=None)
@given(kind=st.sampled_from(sorted(SAMPLES)),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 10**6)))
def test_damaged_files_never_escape_as_anything_but_image_error(tmp_path_factory, kind, edits,
                                                                 cut):
    """Flip bytes in / cut off real files of every format: read_image returns a
    proper uint8 image or raises a one-line ImageError, nothing else."""
    data = bytearray(SAMPLES[kind])
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        data = data[:cut % (len(data) + 1)]
    path = tmp_path_factory.getbasetemp() / f"damaged.{kind.split('-')[0].lower()}"
    path.write_bytes(bytes(data))
    try:
        rgb, alpha = image_io.read_image(path, max_pixels=10**6)
    except ImageError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e), str(e)
    else:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert alpha is None or alpha.shape == rgb.shape[:2]


# --- a few examples end to end, through the real script and engine ----------------------

FAST_SUBPROCESS = ["--objective=conv2/3x3"]  # a shallow layer: quick to compile


@pytest.mark.slow
@settings(max_examples=10, deadline=None, derandomize=True, phases=[Phase.explicit,
                                                                  Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(width=side_st, height=side_st, mode=st.sampled_from(MODES),
       flags=_one_of_mostly(
           st.fixed_dictionaries({"steps": st.integers(1, 2), "octaves": st.integers(1, 2),
                                  "octave_scale": st.sampled_from([1.4, 2.0]),
                                  "step_size": st.sampled_from([0.5, 1.5])}),
           st.fixed_dictionaries({"steps": st.integers(-1, 2), "octaves": st.sampled_from([1, 60]),
                                  "octave_scale": st.sampled_from([1.0, 1.4, NAN]),
                                  "step_size": st.sampled_from([NAN, -1.0, 1.5])})))
def test_dream_script_succeeds_or_fails_in_one_line(weights_dir, tmp_path, width, height, mode,
                                                    flags):
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        folder = Path(tmp)
        source = _write_image(folder, width, height, mode, width * 1000 + height)
        out_dir = folder / "out"
        out_dir.mkdir()
        output = out_dir / "dream.png"
        args = [f"--{name}={value}" for name, value in flags.items()]
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "dream.py"),
                               f"--weights={weights_dir}", f"--input={source}",
                               f"--output={output}", *FAST_SUBPROCESS, *args],
                              capture_output=True, text=True, timeout=300)  # a hang fails
        assert "Traceback" not in proc.stderr, proc.stderr
        if proc.returncode == 0:
            event("dreamed")
            with Image.open(output) as img:
                img.verify()
            with Image.open(output) as img:
                img.load()
                assert img.size == (width, height)
        else:
            event("refused: " + re.sub(r"/\S+|-?\d[\d.e+-]*|nan|inf", "#", proc.stderr)[:60])
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
            assert not output.exists()
        assert _hidden(out_dir) == [], "a temp file was left behind"
