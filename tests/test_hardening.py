"""Crafted PNGs, cache folders, weights folders and input folders: what they can
and cannot make the program do (BUILD_NOTES: threat model).

Each test covers a class of failure, not one probe: every way a record can be
malformed, every role a file can have, every spelling of the same file. No
test here dreams with the real network; the few that need the engine replace
it with a stand-in.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import logging
from PIL import Image, PngImagePlugin

from dream_jax import (api, atomic, batch, classify, compile_cache, errors, image_io, inputs,
                       record, render, replay_files)
from dream_jax.config import DreamConfig
from dream_jax.errors import ImageError, UserError, WeightsError
from dream_jax.weights import store
from tests.conftest import assert_one_line_error, run_main

NO_WEIGHTS = "--weights=/nonexistent"
CONFIG = DreamConfig(octave_n=1, iter_n=1)


def _photo(path: Path, seed: int = 0, size=(48, 64)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _png_with_text(path: Path, text: str, key: str = render.METADATA_KEY) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_itxt(key, text)
    Image.new("RGB", (32, 32)).save(path, pnginfo=info)
    return path


def _dream_record(folder: Path, **request) -> dict:
    """A valid dream record of in.png beside the PNG-to-be, as JSON data."""
    photo = _photo(folder / "in.png")
    req = render.DreamRequest(input=str(photo), config=CONFIG, **request)
    digests = {str(photo): image_io.decode_file(photo).sha256}
    return json.loads(render.metadata(req, "0" * 64, digests)[render.METADATA_KEY])


# --- replay: bare names, two folders, first sha256 match ---------------------------

@pytest.mark.parametrize("name", ["/etc/passwd", "../in.png", "sub/in.png", "..", ".",
                                  "a\\b.png", "in\nx.png", "x" * 300 + ".png", ""])
def test_replay_takes_only_a_bare_name_from_the_record(tmp_path, name):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "sub").mkdir()
    rec = _dream_record(folder)
    shutil.copy(folder / "in.png", folder / "sub" / "in.png")  # same sha: must still not be read
    shutil.copy(folder / "in.png", tmp_path / "in.png")
    rec["request"]["input"] = name
    png = _png_with_text(folder / "out.png", json.dumps(rec))
    with pytest.raises(UserError, match="bare file name") as error:
        render.request_from_png(png)
    assert "\n" not in errors.one_line(str(error.value))


def test_replay_searches_beside_then_the_working_directory_first_match(tmp_path, monkeypatch):
    folder, cwd = tmp_path / "photos", tmp_path / "cwd"
    folder.mkdir()
    cwd.mkdir()
    rec = _dream_record(folder)
    png = _png_with_text(folder / "out.png", json.dumps(rec))
    shutil.move(folder / "in.png", cwd / "in.png")
    _photo(folder / "in.png", seed=9)  # same name beside the PNG, other content
    monkeypatch.chdir(cwd)
    request, _ = render.request_from_png(png)
    assert Path(request.input).resolve() == (cwd / "in.png").resolve()
    (cwd / "in.png").unlink()
    with pytest.raises(UserError, match="with the recorded sha256"):
        render.request_from_png(png)


def test_hashing_streams_and_never_reads_what_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)  # a plain open() to read it would block forever: no writer
    assert replay_files.sha256_of(fifo) is None
    with pytest.raises(ImageError, match="not a regular file"):
        image_io.decode_file(fifo)
    assert replay_files.sha256_of(tmp_path) is None
    assert replay_files.sha256_of(tmp_path / "missing") is None
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(3 * (1 << 20) + 5)
    assert replay_files.sha256_of(big) == hashlib.sha256(big.read_bytes()).hexdigest()


def _bomb_text() -> bytes:
    return zlib.compress(b"\0" * (64 << 20), 9)


def _crafted(tmp_path: Path) -> dict:
    """Every shape of malformed record, each as a PNG."""
    folder = tmp_path / "crafted"
    folder.mkdir()
    good = _dream_record(folder)

    def edit(fn):
        rec = json.loads(json.dumps(good))
        fn(rec)
        return json.dumps(rec)
    texts = {
        "deep": "[" * 100_000 + "]" * 100_000,
        "huge": json.dumps({**good, "pad": "x" * (record.MAX_TEXT + 1)}),
        "list": "[1, 2, 3]",
        "not_json": "{",
        "float_for_int": edit(lambda r: r["request"]["config"].update(octave_n=1.5)),
        "string_for_int": edit(lambda r: r["request"].update(seed="7")),
        "list_for_record": edit(lambda r: r["request"].update(config=[1, 2])),
        "missing_key": edit(lambda r: r.pop("request")),
        "huge_int": edit(lambda r: r["request"].update(seed=10**30)),
        "huge_float": edit(lambda r: r["request"]["config"].update(step_size=1e308 * 10)),
        "many_digits": '{"request": {"seed": ' + "9" * 5000 + "}}",
        "long_name": edit(lambda r: r["request"].update(input="x" * 5000)),
        "unknown_field": edit(lambda r: r["request"].update(surprise=1)),
        "regions_without_digests": edit(lambda r: r["request"].update(
            regions=[["in.png", "inception_3a/output"]])),
        "future_schema": edit(lambda r: r.update(schema=record.SCHEMA + 1)),
        "bad_sha": edit(lambda r: r.update(input_sha256="../../etc")),
    }
    pngs = {kind: _png_with_text(folder / f"{kind}.png", text) for kind, text in texts.items()}
    # a compressed-text bomb: a zTXt chunk of 64 MiB of zeros
    raw = (folder / "list.png").read_bytes()
    chunk = render.METADATA_KEY.encode() + b"\0\0" + _bomb_text()
    ztxt = struct.pack(">I", len(chunk)) + b"zTXt" + chunk + struct.pack(
        ">I", zlib.crc32(b"zTXt" + chunk))
    at = raw.index(b"IDAT") - 4
    (folder / "text_bomb.png").write_bytes(raw[:at] + ztxt + raw[at:])
    pngs["text_bomb"] = folder / "text_bomb.png"
    # a header bomb: 100000 x 100000 declared, a valid record
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    head = raw[:8] + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(
        ">I", zlib.crc32(b"IHDR" + ihdr))
    (folder / "header_bomb.png").write_bytes(head + raw[33:])
    pngs["header_bomb"] = folder / "header_bomb.png"
    (folder / "eps.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    pngs["eps"] = folder / "eps.png"
    return pngs


@pytest.mark.parametrize("script", ["dream", "visualize"])
def test_every_crafted_record_is_one_line_in_both_replays(tmp_path, script):
    out = tmp_path / "out"
    out.mkdir()
    for kind, png in _crafted(tmp_path).items():
        args = ([f"--output={out / 'o.png'}"] if script == "dream" else [f"--output_dir={out}"])
        proc = run_main(script, NO_WEIGHTS, f"--replay={png}", *args)
        assert_one_line_error(proc)
        assert not list(out.iterdir()), kind


def test_record_schema_refuses_each_wrong_type_with_the_field_named():
    spec = record.Obj({"n": record.Int(0, 9), "x": record.Float(), "s": record.Str(4),
                       "l": record.List(record.Int(), 2), "o": record.Obj({"a": record.Bool()})},
                      closed=True)
    good = {"n": 3, "x": 1, "s": "ab", "l": [1], "o": {"a": True}}
    assert record.loads(json.dumps(good), spec, "p") == {**good, "x": 1.0}
    for field, bad in [("n", 1.5), ("n", True), ("n", 10), ("x", "1"), ("s", "abcde"),
                       ("l", [1, 2, 3]), ("l", {"a": 1}), ("o", []), ("o", {"a": 1})]:
        with pytest.raises(record.RecordError, match=f"record.{field}"):
            record.loads(json.dumps({**good, field: bad}), spec, "p")
    with pytest.raises(record.RecordError, match="nested"):
        record.loads('{"a": "[[[[", "b": ' + "[" * 9 + "]" * 9 + "}", spec, "p")
    text = record.Obj({"s": record.Str()})
    assert record.loads(r'{"s": "\\\"[[[[[[[[[[["}', text, "p")["s"] == '\\"' + "[" * 11


def test_the_request_schema_covers_every_request_field():
    spec = render._request_spec().required["request"]
    fields = {f.name for f in dataclasses.fields(render.DreamRequest)}
    assert set(spec.required) | set(spec.optional) == fields


# --- the compiled-code caches --------------------------------------------------------

def _doubled(x):
    return x * 2


@pytest.fixture
def cache(tmp_path):
    compile_cache.enable(tmp_path / "cache")
    yield tmp_path / "cache"
    compile_cache.enable(None)


def test_an_exported_entry_is_bound_to_its_key(cache, monkeypatch):
    jitted = jax.jit(_doubled)
    args3, args4 = (jnp.ones(3),), (jnp.ones(4),)
    compile_cache.executable(jitted, {}, *args3)
    (entry,) = (cache / "exported").glob("*.jaxexport")
    key4 = compile_cache._key(jitted, {}, compile_cache.abstract(args4))
    planted = cache / "exported" / f"{jitted.__name__}-{key4}.jaxexport"
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda msg, *a: warnings.append(msg % a))
    payload = entry.read_bytes()[len(compile_cache._MAGIC) + 32:]
    for blob in (entry.read_bytes(),  # as it is: sealed for the other key
                 compile_cache._MAGIC + compile_cache._seal(key4, payload) + payload):
        # (re-sealed for this key, as a forger would: its shapes fit no argument)
        planted.write_bytes(blob)
        compile_cache.enable(cache)
        np.testing.assert_array_equal(compile_cache.executable(jitted, {}, *args4)(*args4),
                                      np.full(4, 2.0))
    assert any("not written for this key" in w for w in warnings), warnings
    assert any("tracing it" in w for w in warnings), warnings


def test_the_cache_folder_is_made_private(tmp_path):
    compile_cache.enable(tmp_path / "new" / "cache")
    try:
        for sub in ("", "jax", "exported"):
            assert (tmp_path / "new" / "cache" / sub).stat().st_mode & 0o777 == 0o700
        assert compile_cache._folder is not None
    finally:
        compile_cache.enable(None)


@pytest.mark.parametrize("unsafe", ["world_writable", "group_writable", "other_owner",
                                    "parent_world_writable", "sub_world_writable"])
def test_a_cache_folder_others_can_write_turns_caching_off_with_one_warning(tmp_path, unsafe,
                                                                             monkeypatch):
    parent = tmp_path / "shared"
    folder = parent / "cache"
    (folder / "jax").mkdir(parents=True)
    (folder / "exported").mkdir()
    if unsafe == "world_writable":
        folder.chmod(0o777)
    elif unsafe == "group_writable":
        folder.chmod(0o770)
    elif unsafe == "other_owner":
        if os.geteuid() != 0:
            pytest.skip("needs root to give the folder to another user")
        os.chown(folder, 65534, 65534)
    elif unsafe == "parent_world_writable":
        parent.chmod(0o777)  # without the sticky bit: others can swap the folder
    else:
        (folder / "jax").chmod(0o777)
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda msg, *a: warnings.append(msg % a))
    compile_cache.enable(folder)
    try:
        assert compile_cache._folder is None and jax.config.jax_compilation_cache_dir is None
        assert len(warnings) == 1 and "not caching" in warnings[0], warnings
    finally:
        compile_cache.enable(None)
    parent.chmod(0o1777)  # the sticky bit (as /tmp has) makes a shared parent safe
    folder.chmod(0o700)
    (folder / "jax").chmod(0o700)
    if unsafe != "other_owner":
        assert compile_cache.private_folder(folder) is None


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


# --- batch: names, temps, fingerprints, SIGTERM ---------------------------------------

def _names(folder: Path, files: list[str], spec: str | None = None, texts=("a",)) -> list:
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    return list(inputs.entries(spec or str(folder), list(texts), folder.parent / "out"))


@pytest.mark.parametrize("files", [
    ["a.png", "a.png.png"], ["a.jpg", "a.png", "a.png.png"], ["a.png.png", "a.png.png.png"],
    ["b.png", "b.jpg", "b.jpg.png", "b.png.png"], ["c.tif", "c.tiff", "c.png.tif"]])
def test_batch_output_names_are_unique_within_a_folder(tmp_path, files):
    for texts in (["a"], ["a", "b"]):
        folder = tmp_path / f"in{len(texts)}"
        folder.mkdir()
        found = _names(folder, files, texts=texts)
        outputs = [o.name for e in found for _, o in e.outputs]
        assert len(outputs) == len(set(outputs)) == len(files) * len(texts), outputs
        assert not any(e.error for e in found)


def test_batch_names_are_unique_for_random_folders(tmp_path):
    rng = np.random.default_rng(0)
    for trial in range(30):
        parts = ["a", "a.png", "a.jpg", "b", "a.png.png"]
        files = sorted({"".join(rng.choice(parts, rng.integers(1, 4))) + ".png"
                        for _ in range(rng.integers(2, 8))})
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        outputs = [o.name for e in _names(folder, files) for _, o in e.outputs]
        assert len(outputs) == len(set(outputs)) == len(files), (files, outputs)


def test_a_name_taken_in_two_folders_is_an_error_entry_not_an_overwrite(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    found = _names(root, ["x/a.png", "y/a.png"], spec=str(root / "*" / "*.png"))
    assert [bool(e.error) for e in found] == [False, True]
    assert "already taken" in found[1].error
    listed = tmp_path / "list.txt"
    listed.write_text("in/x/a.png\nin/y/a.png\nin/x/a.png\n")
    found = list(inputs.entries(str(listed), ["t"], tmp_path / "out"))
    assert [o.name for e in found[:2] for _, o in e.outputs] == ["a.png", "a.png.png"]
    assert "already taken" in found[2].error


def test_an_input_folder_is_never_the_output_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "p.png")
    for spec in (str(folder), str(folder / "*.png"), str(tmp_path / "*" / "*.png")):
        with pytest.raises(UserError, match="is the input folder"):
            inputs.check_output_dir(spec, tmp_path / "." / "photos")
    listed = tmp_path / "list.txt"
    listed.write_text("photos/p.png\n")
    (entry,) = inputs.entries(str(listed), ["t"], folder)
    assert "its own output" in entry.error


def _temp(folder: Path, pid: int, host: str | None = None, age: float = 0) -> Path:
    path = folder / f".out.png.{host or atomic.host_id()}-{pid}.a{int(age)}.tmp"
    path.write_bytes(b"partial")
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_only_temps_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        hour = atomic.FOREIGN_AGE + 60
        stale = [_temp(tmp_path, dead.pid), _temp(tmp_path, 1, host="0badc0de", age=hour)]
        legacy = tmp_path / ".old.png.x1y2z3.tmp"
        legacy.write_bytes(b"")
        os.utime(legacy, (time.time() - hour, time.time() - hour))
        kept = [_temp(tmp_path, live.pid), _temp(tmp_path, os.getpid()),
                _temp(tmp_path, 1, host="0badc0de")]
        fresh_legacy = tmp_path / ".new.png.a1b2c3.tmp"
        fresh_legacy.write_bytes(b"")
        assert atomic.remove_stale_temps(tmp_path) == len(stale) + 1
        assert all(p.exists() for p in kept + [fresh_legacy])
        assert not any(p.exists() for p in stale + [legacy])
    finally:
        live.kill()
        live.wait()


def test_a_temp_name_stays_short_for_the_longest_target(tmp_path):
    target = tmp_path / ("é" * 120 + ".png")  # 245 bytes: legal, the temp must be too
    atomic.atomic_write(target, b"data")
    assert target.read_bytes() == b"data"
    render.check_output(target)


def test_a_rerun_with_other_flags_refuses_outputs_made_otherwise(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    photo = _photo(folder / "p.png")
    request = render.DreamRequest(config=CONFIG, objective="inception_3a/output")
    digests = {str(photo): "0" * 64}
    made = dataclasses.replace(request, input=str(photo))
    image_io.write_png(out / "p.png", np.zeros((8, 8, 3), np.uint8), None,
                       render.metadata(made, "0" * 64, digests))
    layers = request.layers

    def outcome(req):
        items = list(batch._read(str(folder), out, req, [req.objective], layers,
                                 batch.distributed.Share(), {"read_seconds": 0.0}))
        return [type(i).__name__ for i in items]
    assert outcome(request) == ["_Skipped"]
    assert outcome(dataclasses.replace(request, seed=1)) == ["_Failed"]
    assert outcome(dataclasses.replace(request, config=CONFIG.replace(step_size=2.0))) \
        == ["_Failed"]
    Image.new("RGB", (8, 8)).save(out / "p.png")  # not made by dream_jax
    assert outcome(request) == ["_Failed"]


def test_sigterm_stops_a_batch_with_the_summary_as_ctrl_c_does(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(folder / "p.png")

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the batch")
    monkeypatch.setattr(batch, "_dream_stream", killed)
    previous = signal.getsignal(signal.SIGTERM)
    summary = batch.run_batch(str(folder), str(tmp_path / "out"),
                              render.DreamRequest(config=CONFIG), progress=False, devices=1)
    assert summary["interrupted"] is True
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["interrupted"] is True
    assert signal.getsignal(signal.SIGTERM) is previous


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


# --- weights: the known digest at every load ----------------------------------------

@pytest.mark.parametrize("text", ["[1, 2]", '"a string"', "[" * 100_000 + "]" * 100_000, "7"])
def test_a_manifest_that_is_not_an_object_is_one_line(tmp_path, text):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(WeightsError, match="manifest"):
        store.load_arrays(tmp_path)
    proc = run_main("classify", f"--weights={tmp_path}", f"--input={_photo(tmp_path / 'p.png')}")
    assert_one_line_error(proc, "manifest")


def test_tampered_weights_with_an_edited_manifest_are_refused(weights_dir, tmp_path):
    arrays = store.load_arrays(weights_dir)
    key = "conv1/7x7_s2/bias"
    tampered = {**arrays, key: arrays[key] + 0.5}
    store.save(tampered, tmp_path / "t", {"model": store.BVLC_MODEL})  # manifest matches the file
    with pytest.raises(WeightsError, match="not the published ones"):
        store.load_arrays(tmp_path / "t")
    renamed = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert renamed["file"] == store.WEIGHTS_FILE  # the BVLC file name claims the BVLC model


def test_non_float_parameters_are_refused(weights_dir, tmp_path):
    import safetensors.numpy
    arrays = store.load_arrays(weights_dir)
    for dtype in (np.int32, np.float64):
        data = safetensors.numpy.save({k: (a.astype(dtype) if k.endswith("bias") else a)
                                       for k, a in arrays.items()})
        folder = tmp_path / np.dtype(dtype).name
        folder.mkdir()
        (folder / "other.safetensors").write_bytes(data)
        (folder / "manifest.json").write_text(json.dumps(
            {"file": "other.safetensors", "sha256": hashlib.sha256(data).hexdigest(),
             "model": "other"}))
        with pytest.raises(WeightsError, match="dtype"):
            store.load_arrays(folder)


def test_a_weights_file_is_hashed_once_per_identity(weights_dir, tmp_path, monkeypatch):
    folder = tmp_path / "w"
    shutil.copytree(weights_dir, folder)
    calls = []
    original = store.content_sha256
    monkeypatch.setattr(store, "content_sha256", lambda a: calls.append(1) or original(a))
    store.load_arrays(folder)
    store.load_arrays(folder)
    assert len(calls) == 1
    path = folder / store.WEIGHTS_FILE
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new identity: checked again
    store.load_arrays(folder)
    assert len(calls) == 2
