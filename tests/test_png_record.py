"""The record envelope dreams and visualisations share: written with the build
and weights, read back against its kind's schema, refused with other weights."""
import json

import numpy as np
import pytest

from dream_jax.errors import UserError
from dream_jax.io import build, image_io, record, replay

SHA = "ab" * 32
KIND = replay.spec({"thing": record.Obj({"n": record.Int(0, 9)}, closed=True)})


def _png(tmp_path, text: dict, name="r.png"):
    path = tmp_path / name
    image_io.write_png(path, np.zeros((4, 4, 3), np.uint8), None, text)
    return path


def test_a_record_reads_back_with_its_envelope(tmp_path):
    png = _png(tmp_path, replay.png_text(SHA, thing={"n": 3}))
    got = replay.read(png, "thing", KIND, "no thing")
    assert got["thing"] == {"n": 3} and got["weights_sha256"] == SHA
    assert got["schema"] == record.SCHEMA and got["build"] == build.current()
    replay.check_replayable(got, SHA, "the thing")  # same weights, same build: silent


def test_other_kinds_bad_fields_and_other_weights_are_one_line_errors(tmp_path):
    other = _png(tmp_path, replay.png_text(SHA, request={"n": 3}), "other.png")
    with pytest.raises(UserError, match="no thing"):
        replay.read(other, "thing", KIND, "no thing")
    with pytest.raises(UserError, match="no thing"):
        replay.read(_png(tmp_path, {}, "bare.png"), "thing", KIND, "no thing")
    bad = json.loads(replay.png_text(SHA, thing={"n": 30})[replay.METADATA_KEY])
    png = _png(tmp_path, {replay.METADATA_KEY: json.dumps(bad)}, "bad.png")
    with pytest.raises(record.RecordError, match=r"record\.thing\.n: 30 is outside 0\.\.9"):
        replay.read(png, "thing", KIND, "no thing")
    got = replay.read(_png(tmp_path, replay.png_text(SHA, thing={"n": 1})), "thing", KIND, "")
    with pytest.raises(UserError, match="the thing was made with different weights"):
        replay.check_replayable(got, "cd" * 32, "the thing")
