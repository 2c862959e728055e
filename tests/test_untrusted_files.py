"""Crafted PNGs, cache folders and weights folders: what they can and cannot
make the program do (BUILD_NOTES: threat model). Each test covers a class of
failure (every way a record can be malformed, every unsafe folder), not one
probe; none dreams with the real network.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import struct
import time
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import logging
from PIL import Image, PngImagePlugin

from dream_jax.engine import compile_cache
from dream_jax import errors, render
from dream_jax.io import image_io, record, replay_files
from dream_jax.engine.config import DreamConfig
from dream_jax.errors import ImageError, UserError, WeightsError
from dream_jax.model.weights import store
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
