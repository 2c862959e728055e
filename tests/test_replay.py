"""Outputs carry file names and checksums, never paths; replay finds and checks the files."""
import json
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from dream_jax.io import build, image_io
from dream_jax import render
from dream_jax.engine.config import DreamConfig
from dream_jax.errors import UserError
from tests.conftest import save_noise

CONFIG = DreamConfig(octave_n=1, iter_n=1)
OBJECTIVE = "inception_3a/output"


def _photo(path, seed=0):
    return save_noise(path, (48, 64), seed)


@pytest.fixture
def dreamed(params, weights_dir, tmp_path):
    """A dream of photos/in.png into photos/out.png, with a guide beside it."""
    folder = tmp_path / "photos"
    folder.mkdir()
    photo, guide = _photo(folder / "in.png"), _photo(folder / "guide.png", seed=1)
    request = render.DreamRequest(input=str(photo), objective=f"{OBJECTIVE}+guide({OBJECTIVE})",
                                  config=CONFIG, guide=str(guide))
    render.render(request, folder / "out.png", params=params, weights_dir=weights_dir,
                  progress=False)
    return folder / "out.png"


def _replay(params, weights_dir, png, output, **paths):
    request, record = render.request_from_png(png, **paths)
    render.render(request, output, params=params, weights_dir=weights_dir, progress=False,
                  replay_record=record)
    return output.read_bytes()


def test_metadata_holds_names_and_checksums_not_paths(dreamed, tmp_path):
    text = image_io.read_png_metadata(dreamed)[render.METADATA_KEY]
    assert str(tmp_path) not in text and "/" not in json.loads(text)["request"]["input"]
    record = json.loads(text)
    assert record["request"]["input"] == "in.png" and record["request"]["guide"] == "guide.png"
    assert len(record["input_sha256"]) == 64 and len(record["guide_sha256"]) == 64


def test_replay_finds_the_files_beside_the_png(params, weights_dir, dreamed, tmp_path):
    again = _replay(params, weights_dir, dreamed, tmp_path / "again.png")
    assert again == dreamed.read_bytes()


def test_replay_finds_the_files_in_the_working_directory(params, weights_dir, dreamed, tmp_path,
                                                         monkeypatch):
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(dreamed, moved / "out.png")
    monkeypatch.chdir(dreamed.parent)
    assert _replay(params, weights_dir, moved / "out.png", tmp_path / "r.png") \
        == (moved / "out.png").read_bytes()


def test_replay_takes_a_renamed_input_after_checking_its_sha256(params, weights_dir, dreamed,
                                                                tmp_path):
    renamed = shutil.copy(dreamed.parent / "in.png", tmp_path / "renamed.png")
    (dreamed.parent / "in.png").unlink()
    _replay(params, weights_dir, dreamed, tmp_path / "r.png", input_path=str(renamed))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "r.png")),
                                  np.asarray(Image.open(dreamed)))
    with pytest.raises(UserError, match="not the file the dream was made from"):
        render.request_from_png(dreamed, input_path=str(_photo(tmp_path / "other.png", 5)))


def test_replay_without_the_input_says_how_to_give_it(dreamed, tmp_path, monkeypatch):
    (dreamed.parent / "in.png").unlink()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="--input=FILE") as error:
        render.request_from_png(dreamed)
    assert "\n" not in str(error.value)


def test_noise_dreams_replay_without_files(params, weights_dir, tmp_path):
    request = render.DreamRequest(objective=OBJECTIVE, config=CONFIG, noise_size=48)
    render.render(request, tmp_path / "noise.png", params=params, weights_dir=weights_dir,
                  progress=False)
    assert _replay(params, weights_dir, tmp_path / "noise.png", tmp_path / "r.png") \
        == (tmp_path / "noise.png").read_bytes()
    with pytest.raises(UserError, match="had no input"):
        render.request_from_png(tmp_path / "noise.png", input_path=str(tmp_path / "noise.png"))


def test_the_record_names_the_jax_build_and_replay_on_another_says_so(
        params, weights_dir, dreamed, tmp_path, caplog):
    record = json.loads(image_io.read_png_metadata(dreamed)[render.METADATA_KEY])
    assert record["build"] == build.current()
    assert set(record["build"]) == {"dream_jax", "jax", "jaxlib", "backend", "device"}
    with caplog.at_level(logging.WARNING):
        _replay(params, weights_dir, dreamed, tmp_path / "same.png")
    assert "pixels may differ" not in caplog.text  # the same build: nothing to say

    other = dict(record, build={**record["build"], "jax": "0.0.1", "jaxlib": "0.0.1"})
    crafted = dreamed.parent / "other_build.png"
    pixels = np.asarray(Image.open(dreamed))
    image_io.write_png(crafted, pixels, None, {render.METADATA_KEY: json.dumps(other)})
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = _replay(params, weights_dir, crafted, tmp_path / "again.png")
    [line] = [r.getMessage() for r in caplog.records if "pixels may differ" in r.getMessage()]
    assert "jax 0.0.1 (jaxlib 0.0.1)" in line
    assert f"this is dream_jax {build.current()['dream_jax']}, jax {build.current()['jax']}" in line
    assert again == dreamed.read_bytes()  # replay goes on (here: the same build really)
