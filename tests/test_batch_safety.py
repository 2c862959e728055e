"""Batch outputs: names unique by construction, only dead writers' temps
removed, outputs kept only when made by the same request, SIGTERM stopping as
Ctrl-C does (BUILD_NOTES: threat model). No real dreaming.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dream_jax.io import atomic, image_io, input_folders
from dream_jax.scale import batch
from dream_jax import render
from dream_jax.engine.config import DreamConfig
from dream_jax.errors import UserError
from tests.test_untrusted_files import _photo

CONFIG = DreamConfig(octave_n=1, iter_n=1)


# --- batch: names, temps, fingerprints, SIGTERM ---------------------------------------

def _names(folder: Path, files: list[str], spec: str | None = None, texts=("a",)) -> list:
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    return list(input_folders.entries(spec or str(folder), list(texts), folder.parent / "out"))


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
    found = list(input_folders.entries(str(listed), ["t"], tmp_path / "out"))
    assert [o.name for e in found[:2] for _, o in e.outputs] == ["a.png", "a.png.png"]
    assert "already taken" in found[2].error


def test_an_input_folder_is_never_the_output_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "p.png")
    for spec in (str(folder), str(folder / "*.png"), str(tmp_path / "*" / "*.png")):
        with pytest.raises(UserError, match="is the input folder"):
            input_folders.check_output_dir(spec, tmp_path / "." / "photos")
    listed = tmp_path / "list.txt"
    listed.write_text("photos/p.png\n")
    (entry,) = input_folders.entries(str(listed), ["t"], folder)
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



def test_an_output_recorded_before_fingerprints_is_kept_when_its_request_matches(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    photo = _photo(folder / "p.png")
    request = render.DreamRequest(config=CONFIG, objective="inception_3a/output")
    text = render.metadata(dataclasses.replace(request, input=str(photo)), "0" * 64,
                           {str(photo): "0" * 64})
    old = json.loads(text[render.METADATA_KEY])
    del old["request_sha256"]  # as written before the field existed
    image_io.write_png(out / "p.png", np.zeros((8, 8, 3), np.uint8), None,
                       {render.METADATA_KEY: json.dumps(old)})
    assert batch.existing(out / "p.png", request) is True
    assert batch.existing(out / "p.png", dataclasses.replace(request, seed=3)) is False
