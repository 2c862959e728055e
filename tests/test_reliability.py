"""Issue 6: bad input, faults and untrusted files never lose work or run code.

Every bad input ends in one `error:` line naming the file and the problem, a
non-zero exit, no traceback, no output and no leftover temp file; odd but
valid images dream; killed or interrupted batches resume without losing or
redoing work. Cases already in test_dream_scripts.py / test_weights.py are not
repeated here.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dream_jax.io import image_io
from dream_jax import render
from dream_jax.model import weights
from dream_jax.errors import ImageError, WeightsError
from dream_jax.model.weights import convert
from tests.conftest import QUICK_FLAGS as FAST, ROOT, PicklePayload, assert_one_line_error
from tests.conftest import run_main, run_script, save_noise as _save, smooth_photo

NO_WEIGHTS = "--weights=/nonexistent"  # an error must come before the weights are needed
QUICK = 30.0  # seconds: far less than any dream takes, even on a loaded 2-core machine


def _hidden(folder: Path) -> list[str]:
    """Leftover temp files (atomic.py names them `.<name>.<random>.tmp`)."""
    return sorted(p.name for p in Path(folder).rglob(".*"))


def _assert_valid_png(path: Path, size: tuple[int, int] | None = None, mode: str | None = None):
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG"
        if size is not None:
            assert img.size == size, (path, img.size)
        if mode is not None:
            assert img.mode == mode, (path, img.mode)
        return np.asarray(img)


def _timed(name: str, *args: str, **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = run_main(name, *args, **kwargs)
    return proc, time.perf_counter() - start


# --- hand-made image files -------------------------------------------------------

def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _png_header_only(width: int, height: int, idat: bytes = b"\0" * 64) -> bytes:
    """A syntactically valid PNG declaring width x height RGB pixels, with almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(idat))
            + _chunk(b"IEND", b""))


def _photo(size=(64, 80), seed=0) -> Image.Image:
    return Image.fromarray(smooth_photo(seed, size))


def _encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _bad_crc_png() -> bytes:
    data = bytearray(_encoded(_photo(), "PNG"))
    start = data.index(b"IDAT")
    length = struct.unpack(">I", data[start - 4:start])[0]
    data[start + 4 + length] ^= 0xFF  # first byte of IDAT's CRC; the pixels are untouched
    return bytes(data)


def _make_bad(kind: str, folder: Path) -> Path:
    """One bad input file (or folder) of the given kind, named after it."""
    makers = {
        "empty.png": lambda: b"",
        "text.jpg": lambda: b"this is a text file, not a JPEG\n",
        "truncated.jpg": lambda: _encoded(_photo(), "JPEG")[:600],
        "truncated.png": lambda: _encoded(_photo(), "PNG")[:-2000],
        "bad_crc.png": _bad_crc_png,
        "bomb.png": lambda: _png_header_only(100_000, 100_000),
        "zero_width.png": lambda: _png_header_only(0, 64),
        "one_px_tall.png": lambda: _encoded(Image.new("RGB", (64, 1), "gray"), "PNG"),
    }
    path = folder / kind
    if kind == "folder.png":
        path.mkdir()
    elif kind != "missing.png":
        path.write_bytes(makers[kind]())
    return path


BAD_IMAGES = [  # (file, what the one error line must say besides the file name)
    ("empty.png", "empty file"),
    ("text.jpg", "not an image"),
    ("truncated.jpg", "truncated"),
    ("truncated.png", "truncated"),
    ("bad_crc.png", "checksum"),
    ("bomb.png", "over the limit of 100,000,000"),
    ("zero_width.png", "not an image"),
    ("one_px_tall.png", "too small"),
    ("folder.png", "is a directory"),
    ("missing.png", "no such file"),
]


# --- 1. bad images ----------------------------------------------------------------

@pytest.mark.parametrize("kind,fragment", BAD_IMAGES, ids=[k for k, _ in BAD_IMAGES])
def test_dream_refuses_bad_image_in_one_line(tmp_path, kind, fragment):
    bad = _make_bad(kind, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    proc, seconds = _timed("dream", NO_WEIGHTS, f"--input={bad}", f"--output={out / 'o.png'}")
    assert_one_line_error(proc, str(bad), fragment)
    assert seconds < QUICK
    assert not list(out.iterdir()), "no output and no temp file"


@pytest.mark.parametrize("kind,fragment", [BAD_IMAGES[i] for i in (2, 5, 8)],
                         ids=[BAD_IMAGES[i][0] for i in (2, 5, 8)])
def test_classify_refuses_bad_image_in_one_line(tmp_path, kind, fragment):
    bad = _make_bad(kind, tmp_path)
    proc = run_main("classify", NO_WEIGHTS, f"--input={bad}")
    assert_one_line_error(proc, str(bad), fragment)
    assert proc.stdout == ""


def test_bomb_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    bomb = _make_bad("bomb.png", tmp_path)
    assert bomb.stat().st_size < 200  # 10 billion pixels declared in a tiny file

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match="100000x100000 is 10,000,000,000 pixels"):
        image_io.read_image(bomb)
    assert Image.MAX_IMAGE_PIXELS == limit  # Pillow's global setting is restored


def test_max_pixels_flag_moves_the_limit(tmp_path):
    photo = tmp_path / "photo.png"
    _photo().save(photo)  # 80x64 = 5,120 pixels
    out = tmp_path / "o.png"
    proc = run_main("dream", NO_WEIGHTS, f"--input={photo}", f"--output={out}",
                    "--max_pixels=5000")
    assert_one_line_error(proc, str(photo), "5,120 pixels, over the limit of 5,000",
                          "--max_pixels")
    # Raised above the image's size, the image passes and the next problem shows.
    proc = run_main("dream", NO_WEIGHTS, f"--input={photo}", f"--output={out}",
                    "--max_pixels=6000")
    assert_one_line_error(proc, "no converted weights")
    proc = run_main("classify", NO_WEIGHTS, f"--input={photo}", "--max_pixels=5000")
    assert_one_line_error(proc, str(photo), "over the limit of 5,000")
    assert not out.exists()


# Run as root, a plain chmod 000 does not stop reads, and a setuid(nobody) child
# could not reach root's interpreter. So root drops CAP_DAC_OVERRIDE and
# CAP_DAC_READ_SEARCH from its bounding set and re-executes: the new interpreter
# obeys file modes like any user. (A wrapper process, not preexec_fn: forking a
# multithreaded JAX process with a Python callback can deadlock.)
_WITHOUT_DAC_OVERRIDE = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        sys.exit(f"prctl: {os.strerror(ctypes.get_errno())}")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def _as_ordinary_user(*args: str) -> subprocess.CompletedProcess:
    prefix = ["-c", _WITHOUT_DAC_OVERRIDE] if os.geteuid() == 0 else []
    return subprocess.run([sys.executable, *prefix, *args], capture_output=True, text=True,
                          timeout=120)


def test_unreadable_file_is_refused(tmp_path):
    secret = tmp_path / "secret.png"
    _photo().save(secret)
    secret.chmod(0)
    probe = _as_ordinary_user("-c", f"open({str(secret)!r}, 'rb').read(1)")
    if probe.returncode == 0 or "prctl" in probe.stderr:
        pytest.skip("cannot make a file unreadable here (running as root, and this sandbox "
                    "does not let it drop CAP_DAC_OVERRIDE)")
    proc = _as_ordinary_user(str(ROOT / "scripts" / "dream.py"), NO_WEIGHTS,
                             f"--input={secret}", f"--output={tmp_path / 'o.png'}")
    assert_one_line_error(proc, str(secret), "permission denied")
    assert not (tmp_path / "o.png").exists()


def test_odd_images_read_in_displayed_orientation_with_alpha(tmp_path):
    """What read_image makes of valid but unusual files (in-process, no dreaming)."""
    rgb = np.asarray(_photo())
    alpha = np.random.default_rng(1).integers(0, 256, rgb.shape[:2], dtype=np.uint8)

    def read(img: Image.Image, fmt: str = "PNG", **kwargs):
        path = tmp_path / f"image.{fmt.lower()}"
        img.save(path, fmt, **kwargs)
        return image_io.read_image(path)

    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    out, a = read(Image.fromarray(rgb).convert("L"))
    assert a is None and (out == grey[..., None]).all()
    out, a = read(Image.fromarray(np.dstack([grey, alpha]), "LA"))
    assert (a == alpha).all() and (out == grey[..., None]).all()
    out, a = read(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"))
    assert (a == alpha).all() and (out == rgb).all()
    palette = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=64)
    out, a = read(palette)
    assert a is None and (out == np.asarray(palette.convert("RGB"))).all()
    out, a = read(palette, transparency=0)
    assert a is not None and set(np.unique(a)) == {0, 255}
    levels = (np.arange(64 * 80).reshape(64, 80) % 256).astype(np.uint16)
    assert Image.fromarray(levels * 257).mode == "I;16"
    out, a = read(Image.fromarray(levels * 257))  # 16-bit: 257*k -> k, no clipping at 255
    assert a is None and (out == levels[..., None]).all()
    out, _ = read(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    assert out.shape == rgb.shape and np.abs(out.astype(int) - rgb).mean() < 8
    stored = Image.fromarray(rgb)  # 80 wide, 64 tall; orientation 6: shown rotated 90 CW
    exif = stored.getexif()
    exif[0x0112] = 6
    out, _ = read(stored, "JPEG", quality=95, exif=exif)
    assert out.shape == (80, 64, 3)
    assert np.abs(out.astype(int) - np.rot90(rgb, k=-1)).mean() < 8
    frames = [Image.new("RGB", (80, 64), color) for color in ("red", "lime", "blue")]
    out, a = read(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert a is None and (out == [255, 0, 0]).all(), "the first frame"
    out, _ = read(Image.fromarray(np.zeros((16, 4000, 3), np.uint8)))
    assert out.shape == (16, 4000, 3)


def _odd_images(folder: Path) -> dict[str, str]:
    """Valid but unusual inputs, all displayed 80x64; name -> expected output mode."""
    folder.mkdir()
    photo = _photo()
    rgb = np.asarray(photo)
    alpha = np.random.default_rng(1).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    photo.convert("L").save(folder / "grey.png")
    palette = photo.convert("P", palette=Image.ADAPTIVE, colors=64)
    palette.save(folder / "palette.png")
    palette.save(folder / "palette_transparent.png", transparency=0)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(folder / "rgba.png")
    Image.fromarray(np.dstack([np.asarray(photo.convert("L")), alpha]), "LA").save(
        folder / "la.png")
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((np.asarray(photo.convert("L")).astype(np.uint16) * 257)).save(
        folder / "grey16.png")
    stored = photo.transpose(Image.Transpose.ROTATE_90)  # stored 64 wide, 80 tall
    exif = stored.getexif()
    exif[0x0112] = 6  # displayed rotated back: 80 wide, 64 tall
    stored.save(folder / "exif_rotated.jpg", exif=exif)
    frames = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    return {"grey.png": "RGB", "palette.png": "RGB", "palette_transparent.png": "RGBA",
            "rgba.png": "RGBA", "la.png": "RGBA", "cmyk.jpg": "RGB", "grey16.png": "RGB",
            "exif_rotated.jpg": "RGB", "animated.gif": "RGB"}


@pytest.mark.slow
def test_odd_but_valid_images_dream(weights_dir, tmp_path):
    inputs = tmp_path / "in"
    expected = _odd_images(inputs)
    out = tmp_path / "out"
    proc = run_main("batch_dream", f"--weights={weights_dir}", f"--inputs={inputs}",
                    f"--output_dir={out}", "--batch_size=1", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert f"done {len(expected)}, skipped 0 (already there), failed 0" in proc.stdout
    for name, mode in expected.items():
        pixels = _assert_valid_png(out / f"{Path(name).stem}.png", (80, 64), mode)
        if mode == "RGBA":  # the input's alpha, re-attached unchanged
            _, alpha = image_io.read_image(inputs / name)
            assert (pixels[..., 3] == alpha).all(), name
    assert _hidden(out) == []
    # The same through scripts/dream.py: output has the displayed (rotated) size.
    single = tmp_path / "exif.png"
    proc = run_main("dream", f"--weights={weights_dir}", f"--input={inputs / 'exif_rotated.jpg'}",
                    f"--output={single}", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {single} (80x64)" in proc.stdout
    _assert_valid_png(single, (80, 64), "RGB")


@pytest.mark.slow
def test_very_wide_image_dreams_at_the_minimum_side(weights_dir, tmp_path):
    wide = tmp_path / "wide.png"
    _save(wide, size=(render.MIN_SIDE, 4000))
    out = tmp_path / "o.png"
    # Two octaves would shrink the 16 px side below the minimum: refused, with advice.
    proc = run_main("dream", NO_WEIGHTS, f"--input={wide}", f"--output={out}", *FAST)
    assert_one_line_error(proc, str(wide), "4000x16", "use at most --octaves=1")
    proc = run_main("dream", f"--weights={weights_dir}", f"--input={wide}", f"--output={out}",
                    "--octaves=1", "--steps=2", "--objective=inception_3b/output")
    assert proc.returncode == 0, proc.stderr
    _assert_valid_png(out, (4000, 16), "RGB")


# --- 2. bad flags and objectives ------------------------------------------------
# test_dream_scripts.py covers steps <= 0, octave_scale 1.0/nan, step_size inf, an
# unknown layer, a channel out of range, a dangling "+", guide() without --guide, a
# missing output folder, a non-PNG output and an unknown normaliser. These run with
# the *default* (slow) dream settings and no weights: the error must come first.

BAD_FLAGS = [
    ("--octaves=60", "use at most --octaves="),
    ("--octaves=1000000000", "octave_n"),
    ("--octave_scale=0.5", "octave_scale"),
    ("--octave_scale=1e308", "use at most --octaves=1"),
    ("--step_size=nan", "step_size"),
    ("--steps=1000000000", "steps"),
    ("--jitter=-1", "jitter"),
    ("--seed=-1", "seed"),
    ("--seed=18446744073709551616", "seed"),
    ("--noise_size=1000000", "max_pixels"),
    ("--objective=channel(inception_4c/output,-1)", "out of range"),
    ("--objective=neuron(inception_4c/output,0,2,2)", "neuron position"),
    ("--objective=inception_4c/output)", "cannot parse"),
    ("--objective=1e400*inception_4c/output", "not finite"),
    ("--objective=", "empty objective"),
    ("--objective=class(1)", "64x64 is too small for loss3/classifier"),
    ("--steps=many", "steps"),
    ("positional", "positional"),
]


@pytest.mark.parametrize("flag,fragment", BAD_FLAGS, ids=[f for f, _ in BAD_FLAGS])
def test_bad_flag_fails_fast_in_one_line_before_weights(tmp_path, flag, fragment):
    extra = ["--noise_size=64", "--octaves=1"] if "class(" in flag else []
    proc, seconds = _timed("dream", NO_WEIGHTS, f"--output={tmp_path / 'o.png'}", *extra, flag,
                           cwd=tmp_path)
    assert_one_line_error(proc, fragment)
    assert "weights" not in proc.stderr
    assert seconds < QUICK
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs (/sys) mounted")
def test_unwritable_output_folder_fails_before_the_dream(tmp_path):
    # Root passes os.access() on /sys, but creating a file there fails: the check
    # must try, or the error would only come after the whole dream.
    proc, seconds = _timed("dream", NO_WEIGHTS, "--output=/sys/kernel/dream.png")
    assert_one_line_error(proc, "/sys/kernel", "not writable")
    assert seconds < QUICK
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    proc = run_main("dream", NO_WEIGHTS, f"--output={not_a_folder / 'o.png'}")
    assert_one_line_error(proc, "is a file, not a folder")
    proc = run_main("batch_dream", NO_WEIGHTS, f"--inputs={tmp_path}",
                    "--output_dir=/sys/kernel/dreams")
    assert_one_line_error(proc, "cannot create output folder /sys/kernel/dreams")


@pytest.mark.parametrize("args,fragment", [
    (["--batch_size=0"], "batch_size"),
    (["--objective=inception_4c/output;inception_9z/output"], "unknown layer"),
    (["--octaves=60"], None),  # per image: reported, the batch goes on (see below)
    (["SAME"], "is the input folder"),
    (["--output_dir=FILE"], "cannot create output folder"),
])
def test_batch_bad_flags_fail_before_weights(tmp_path, args, fragment):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _save(inputs / "a.png", size=(64, 64))
    (tmp_path / "FILE").write_text("x")
    out = inputs if args == ["SAME"] else tmp_path / "out"
    args = [a.replace("FILE", str(tmp_path / "FILE")) for a in args if a != "SAME"]
    proc = run_main("batch_dream", NO_WEIGHTS, f"--inputs={inputs}", f"--output_dir={out}",
                    *args)
    if fragment is None:  # reported per image; nothing left to dream: weights never read
        assert proc.returncode == 1, proc.stderr
        assert "done 0, skipped 0 (already there), failed 1" in proc.stdout
        assert "a.png" in proc.stderr and "use at most --octaves=" in proc.stderr
        assert "Traceback" not in proc.stderr and "weights" not in proc.stderr
    else:
        assert_one_line_error(proc, fragment)
    assert sorted(p.name for p in inputs.iterdir()) == ["a.png"]


# --- 3. untrusted weights ---------------------------------------------------------

def test_converter_refuses_inf_values(shared_weights, tmp_path):
    source = shutil.copytree(shared_weights, tmp_path / "source")
    (source / "SHA256SUMS").unlink()
    target = source / "weights/inception_4c/3x3_bias.bin"
    values = np.frombuffer(target.read_bytes(), "<f4").copy()
    values[7] = np.inf
    target.write_bytes(values.tobytes())
    with pytest.raises(WeightsError, match="inception_4c/3x3/bias contains NaN or Inf"):
        convert.convert(str(source), tmp_path / "out", expected_content_sha256=None,
                        progress=False)
    assert not (tmp_path / "out/manifest.json").exists()


class _CuttingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, but one file is cut in half after a full Content-Length
    (a dropped connection); SHA256SUMS can be hidden."""
    cut = "/weights/inception_4c/3x3_filter.bin"
    hide_sums = False

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/SHA256SUMS" and self.hide_sums:
            self.send_error(404)
            return
        if self.path != self.cut:
            return super().do_GET()
        data = (Path(self.directory) / self.cut.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])
        self.close_connection = True


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def cutting_server(shared_weights):
    servers = []

    def start(hide_sums: bool) -> str:
        handler = type("Handler", (_CuttingHandler,), {"hide_sums": hide_sums})
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(shared_weights)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()


@pytest.mark.parametrize("hide_sums", [False, True], ids=["with_SHA256SUMS", "without_SHA256SUMS"])
def test_truncated_http_download_is_refused(cutting_server, tmp_path, hide_sums):
    url = cutting_server(hide_sums)
    with pytest.raises(WeightsError, match="download failed: .*3x3_filter.bin: .*IncompleteRead"
                       ) as caught:
        convert.convert(url, tmp_path / "out", progress=False)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out/manifest.json").exists()
    assert not (tmp_path / "out/bvlc_googlenet.safetensors").exists()


def test_truncated_download_never_lands_under_its_final_name(cutting_server, shared_weights,
                                                             tmp_path):
    with pytest.raises(WeightsError):
        convert.convert(cutting_server(True), tmp_path / "out", progress=False)
    served = {_sha256(path) for path in shared_weights.rglob("*") if path.is_file()}
    cached = list((tmp_path / "out/downloads").rglob("*"))
    assert cached and {_sha256(path) for path in cached} <= served  # whole files only


def test_loader_never_unpickles_what_the_manifest_points_to(weights_dir, tmp_path):
    folder = shutil.copytree(weights_dir, tmp_path / "w")
    marker = tmp_path / "pwned"
    payload = pickle.dumps(PicklePayload(str(marker)))
    (folder / "weights.pkl").write_bytes(payload)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(file="weights.pkl", sha256=hashlib.sha256(payload).hexdigest())
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        weights.load_params(folder)
    proc = run_main("dream", f"--weights={folder}", f"--output={tmp_path / 'o.png'}",
                    "--noise_size=64", *FAST)
    assert_one_line_error(proc, "weights.pkl", "not a valid safetensors file")
    assert not marker.exists(), "the pickle payload ran"
    assert not (tmp_path / "o.png").exists()


# --- 4. numerics ---------------------------------------------------------------------

def _dead_conv1_channel(params, rgb: np.ndarray) -> int:
    """A conv1 channel that is exactly zero everywhere on this image: its gradient is 0."""
    from dream_jax.model import googlenet, preprocess
    acts = np.asarray(googlenet.apply(params, preprocess.to_model(rgb)[None],
                                      ("conv1/7x7_s2",))["conv1/7x7_s2"][0])
    dead = np.flatnonzero((acts == 0).all(axis=(0, 1)))
    assert dead.size, "no dead channel on this image"
    return int(dead[0])


@pytest.mark.parametrize("normalize", ["mean_abs", "std"])
def test_zero_gradient_on_a_flat_image_never_writes_nan(weights_dir, params, tmp_path, normalize):
    """A flat image and a channel that is dead on it: the gradient is exactly zero,
    so normalising it is 0/0. The output must be the unchanged image, not NaN-as-0."""
    flat = np.full((64, 64, 3), 128, np.uint8)
    Image.fromarray(flat).save(tmp_path / "flat.png")
    channel = _dead_conv1_channel(params, flat)
    out = tmp_path / "o.png"
    proc = run_main("dream", f"--weights={weights_dir}", f"--input={tmp_path / 'flat.png'}",
                    f"--output={out}", "--octaves=1", "--steps=2", f"--normalize={normalize}",
                    f"--objective=channel(conv1/7x7_s2,{channel})")
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" not in proc.stderr
    assert (_assert_valid_png(out, (64, 64), "RGB") == 128).all()


@pytest.mark.slow
def test_black_image_with_a_huge_step_stays_finite_and_valid(weights_dir, tmp_path):
    Image.new("RGB", (64, 64), "black").save(tmp_path / "black.png")
    out = tmp_path / "o.png"
    proc = run_main("dream", f"--weights={weights_dir}", f"--input={tmp_path / 'black.png'}",
                    f"--output={out}", "--step_size=1e30", "--noise_size=64", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" not in proc.stderr and "nan" not in proc.stderr.lower()
    pixels = _assert_valid_png(out, (64, 64), "RGB")
    assert pixels.dtype == np.uint8 and pixels.std() > 0  # it did dream


# --- 5. faults in batch runs -----------------------------------------------------------

# Batches for the fault tests: 8 images, ~0.2 s each once compiled, so a kill or a
# Ctrl-C right after an output appears lands mid-batch.
SLOW_ENOUGH = ["--octaves=2", "--steps=10", "--objective=inception_3b/output"]


def _batch_command(weights_dir, inputs, out, *flags) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "batch_dream.py"), f"--weights={weights_dir}",
            f"--inputs={inputs}", f"--output_dir={out}", "--batch_size=1",
            *(flags or SLOW_ENOUGH)]


def _inputs(folder: Path, count: int = 8) -> list[str]:
    folder.mkdir()
    for i in range(count):
        _save(folder / f"p{i}.png", size=(64, 64), seed=i)
    return [f"p{i}.png" for i in range(count)]


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.glob("*.png")}


def _wait_for_new_output(proc, out: Path, known: int, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(out.glob("*.png"))) > known:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_batch_killed_repeatedly_then_resumed_loses_and_repeats_nothing(weights_dir, tmp_path):
    names = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    command = _batch_command(weights_dir, tmp_path / "in", out)
    rng = random.Random(6)
    seen: dict[str, bytes] = {}
    for round_ in range(4):
        with open(tmp_path / f"log{round_}", "w") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=log)
            if round_ == 0:  # anywhere, start-up and compilation included
                time.sleep(rng.uniform(0.3, 2.0))
            else:  # while it dreams and writes outputs
                assert _wait_for_new_output(proc, out, len(seen)), "no new output"
                time.sleep(rng.uniform(0.0, 0.2))
            assert proc.poll() is None, "the batch finished before the kill"
            proc.kill()
            proc.wait()
        now = _outputs(out)
        for name, data in seen.items():  # a finished output is never rewritten
            assert now[name] == data, name
        for name in now:
            _assert_valid_png(out / name, (64, 64), "RGB")
        seen = now
    assert 0 < len(seen) < len(names), "the kills should land mid-batch"
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    remaining = len(names) - len(seen)
    assert f"done {remaining}, skipped {len(seen)} (already there), failed 0" in proc.stdout
    final = _outputs(out)
    assert sorted(final) == names
    for name, data in seen.items():
        assert final[name] == data, name
    for name in names:
        _assert_valid_png(out / name, (64, 64), "RGB")
        record = json.loads(image_io.read_png_metadata(out / name)[render.METADATA_KEY])
        assert record["request"]["input"] == name  # a name, never a path
    assert _hidden(out) == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == remaining and not summary["interrupted"]


@pytest.mark.slow
def test_batch_sigint_stops_cleanly_with_a_summary(weights_dir, tmp_path):
    names = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    proc = subprocess.Popen(_batch_command(weights_dir, tmp_path / "in", out),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for_new_output(proc, out, 0), "no output appeared"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    assert stdout.startswith("interrupted: done ")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    written = sorted(p.name for p in out.glob("*.png"))
    assert 1 <= len(written) < len(names) and summary["done"] in (len(written), len(written) - 1)
    for name in written:
        _assert_valid_png(out / name, (64, 64), "RGB")
    assert _hidden(out) == []


_DISK_FULL = r"""
import errno, os, runpy, sys
from pathlib import Path
out, budget, script = Path(sys.argv[1]).resolve(), [int(sys.argv[2])], sys.argv[3]
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if Path(dst).resolve().parent == out:  # only the output folder's disk is full
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        budget[0] -= 1
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
sys.argv = sys.argv[3:]
runpy.run_path(script, run_name="__main__")
"""


def _with_full_disk(out: Path, writes_left: int, script: str, *args: str):
    return subprocess.run([sys.executable, "-c", _DISK_FULL, str(out), str(writes_left),
                           str(ROOT / "scripts" / f"{script}.py"), *args],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_disk_full_stops_the_batch_without_corrupting_written_outputs(weights_dir, tmp_path):
    names = _inputs(tmp_path / "in", 6)
    out = tmp_path / "out"
    args = _batch_command(weights_dir, tmp_path / "in", out, *FAST)[2:]
    proc = _with_full_disk(out, 2, "batch_dream", *args)
    assert_one_line_error(proc, "No space left on device", "stopped", "rerun to resume")
    written = _outputs(out)
    assert sorted(written) == names[:2]
    for name in written:
        _assert_valid_png(out / name, (64, 64), "RGB")
    assert _hidden(out) == []
    proc = subprocess.run(_batch_command(weights_dir, tmp_path / "in", out, *FAST),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "done 4, skipped 2 (already there), failed 0" in proc.stdout
    assert {k: v for k, v in _outputs(out).items() if k in written} == written
    # A single dream onto an existing output: the old file stays whole.
    target = out / names[0]
    proc = _with_full_disk(out, 0, "dream", f"--weights={weights_dir}",
                           f"--input={tmp_path / 'in' / names[1]}", f"--output={target}", *FAST)
    assert_one_line_error(proc, str(target), "cannot write output", "No space left on device")
    assert target.read_bytes() == written[names[0]]
    assert _hidden(out) == []


# --- 6. determinism --------------------------------------------------------------------

@pytest.mark.slow
def test_same_inputs_flags_and_seed_give_identical_bytes(weights_dir, tmp_path):
    photo = _save(tmp_path / "photo.png", size=(64, 80), seed=3)
    outputs = []
    for run in range(2):
        out = tmp_path / f"run{run}.png"
        proc = run_script("dream", f"--weights={weights_dir}", f"--input={photo}",
                          f"--output={out}", "--seed=7", *FAST)
        assert proc.returncode == 0, proc.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    other = tmp_path / "seed8.png"
    proc = run_script("dream", f"--weights={weights_dir}", f"--input={photo}",
                      f"--output={other}", "--seed=8", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert (_assert_valid_png(other) != _assert_valid_png(tmp_path / "run0.png")).any()
