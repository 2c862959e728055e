"""The converter and loader: both published forms, URLs, and every kind of bad file."""
import functools
import hashlib
import http.server
import json
import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from PIL import Image

from dream_jax.model import weights
from dream_jax.errors import WeightsError
from dream_jax.model.weights import convert, store
from tests.caffe_writer import write_net
from tests.conftest import PicklePayload, assert_one_line_error, caffe_layers, run_main

FILTER = "weights/inception_4c/3x3_filter.bin"


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def source_copy(shared_weights, tmp_path):
    """A writable copy of the per-layer source, to damage."""
    return shutil.copytree(shared_weights, tmp_path / "source")


def test_manifest_records_source_checksums_and_count(weights_dir, shared_weights):
    manifest = weights.read_manifest(weights_dir)
    assert manifest["parameter_count"] == 6_998_552
    assert manifest["sha256"] == _sha(weights_dir / "bvlc_googlenet.safetensors")
    assert manifest["content_sha256"] == convert.BVLC_GOOGLENET_CONTENT_SHA256
    assert len(manifest["source"]["files"]) == 116
    assert manifest["source"]["files"][FILTER] == _sha(shared_weights / FILTER)
    assert "unrestricted" in manifest["licence"]


@pytest.mark.parametrize("legacy", [False, True], ids=["layer", "legacy_layers"])
def test_caffemodel_gives_byte_identical_safetensors(params, weights_dir, shared_weights,
                                                     tmp_path, legacy):
    model = tmp_path / "bvlc_googlenet.caffemodel"
    model.write_bytes(write_net(*caffe_layers(params), legacy=legacy))
    shutil.copy(shared_weights / "synset_words.txt", tmp_path / "synset_words.txt")
    convert.convert(str(model), tmp_path / "out", progress=False)
    assert _sha(tmp_path / "out/bvlc_googlenet.safetensors") == _sha(
        weights_dir / "bvlc_googlenet.safetensors")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(folder):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture()
def http_server(shared_weights):
    server, url = _serve(shared_weights)
    yield url
    server.shutdown()


def test_url_source_downloads_verifies_and_matches(http_server, weights_dir, tmp_path):
    manifest = convert.convert(http_server + "/", tmp_path / "out", progress=False)
    assert manifest["source"]["location"].startswith("http://127.0.0.1")
    assert _sha(tmp_path / "out/bvlc_googlenet.safetensors") == _sha(
        weights_dir / "bvlc_googlenet.safetensors")
    downloads = sorted(p.name for p in (tmp_path / "out/downloads").rglob("*"))
    assert len(downloads) == 116 + 2  # the layers' files, SHA256SUMS, synset_words.txt
    assert not [name for name in downloads if name.startswith("tmp")]


def test_url_source_reuses_verified_downloads(shared_weights, tmp_path):
    server, url = _serve(shared_weights)
    convert.convert(url + "/", tmp_path / "out", progress=False)
    server.shutdown()  # a second run needs no server: every file is in the cache
    server.server_close()
    (tmp_path / "out/manifest.json").unlink()
    convert.convert(url + "/", tmp_path / "out", progress=False)
    assert (tmp_path / "out/manifest.json").exists()


def test_url_tampered_byte_is_refused_and_not_cached(source_copy, tmp_path):
    data = bytearray((source_copy / FILTER).read_bytes())
    data[1000] ^= 0x01
    (source_copy / FILTER).write_bytes(bytes(data))
    server, url = _serve(source_copy)
    try:
        with pytest.raises(WeightsError, match="checksum mismatch for http://.*3x3_filter.bin"
                           ) as caught:
            convert.convert(url, tmp_path / "out", progress=False)
    finally:
        server.shutdown()
    assert "\n" not in str(caught.value)
    cached = {_sha(path) for path in (tmp_path / "out/downloads").rglob("*")}
    assert cached and _sha(source_copy / FILTER) not in cached
    assert not (tmp_path / "out/manifest.json").exists()


def test_url_missing_file_is_a_clear_error(http_server, tmp_path):
    with pytest.raises(WeightsError, match="HTTP 404"):
        convert.convert(http_server + "/nothing-here", tmp_path / "out", progress=False)
    assert not (tmp_path / "out/manifest.json").exists()


def _convert_script(source, out, *extra):
    return run_main("convert_weights", f"--source={source}", f"--out={out}", *extra)


def test_tampered_byte_is_refused_naming_the_file(source_copy, tmp_path):
    data = bytearray((source_copy / FILTER).read_bytes())
    data[1000] ^= 0x01
    (source_copy / FILTER).write_bytes(bytes(data))
    proc = _convert_script(source_copy, tmp_path / "out")
    assert_one_line_error(proc, "3x3_filter.bin", "checksum mismatch")
    assert not (tmp_path / "out/manifest.json").exists()


def test_tampered_byte_without_checksum_file_fails_content_check(source_copy, tmp_path):
    (source_copy / "SHA256SUMS").unlink()
    data = bytearray((source_copy / FILTER).read_bytes())
    data[2000] ^= 0x10
    (source_copy / FILTER).write_bytes(bytes(data))
    proc = _convert_script(source_copy, tmp_path / "out")
    assert_one_line_error(proc, "do not match the published BVLC GoogLeNet")


def test_truncated_file_is_refused(source_copy, tmp_path):
    (source_copy / "SHA256SUMS").unlink()
    (source_copy / FILTER).write_bytes((source_copy / FILTER).read_bytes()[:-4])
    proc = _convert_script(source_copy, tmp_path / "out")
    assert_one_line_error(proc, "3x3_filter.bin", "truncated")


def test_nan_filled_file_is_refused(source_copy, tmp_path):
    (source_copy / "SHA256SUMS").unlink()
    size = (source_copy / FILTER).stat().st_size
    (source_copy / FILTER).write_bytes(np.full(size // 4, np.nan, "<f4").tobytes())
    proc = _convert_script(source_copy, tmp_path / "out", "--allow_unverified")
    assert_one_line_error(proc, "inception_4c/3x3/kernel", "NaN")


def test_wrong_shape_caffemodel_is_refused(params, tmp_path):
    layers, types = caffe_layers(params)
    layers["inception_4c/3x3"][0] = layers["inception_4c/3x3"][0][:, :64]
    model = tmp_path / "bad.caffemodel"
    model.write_bytes(write_net(layers, types))
    proc = _convert_script(model, tmp_path / "out")
    assert_one_line_error(proc, "inception_4c/3x3", "expected")


def test_garbage_caffemodel_is_refused(tmp_path):
    model = tmp_path / "garbage.caffemodel"
    model.write_bytes(b"\xff" * 100)
    proc = _convert_script(model, tmp_path / "out")
    assert_one_line_error(proc, "not a valid .caffemodel")


@pytest.mark.parametrize("name", ["weights.pth", "weights.pkl", "sneaky.caffemodel"])
def test_pickle_is_refused_and_never_executed(tmp_path, name):
    marker = tmp_path / "pwned"
    (tmp_path / name).write_bytes(pickle.dumps(PicklePayload(str(marker))))
    proc = _convert_script(tmp_path / name, tmp_path / "out")
    assert_one_line_error(proc, name)
    assert not marker.exists(), "the pickle payload ran"


# --- loading the converted file ---

@pytest.fixture()
def converted_copy(weights_dir, tmp_path):
    return shutil.copytree(weights_dir, tmp_path / "w")


def test_loader_refuses_a_tampered_file(converted_copy):
    path = converted_copy / "bvlc_googlenet.safetensors"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match the manifest"):
        weights.load_params(converted_copy)


def test_loader_refuses_missing_files(converted_copy):
    (converted_copy / "bvlc_googlenet.safetensors").unlink()
    with pytest.raises(WeightsError, match="missing"):
        weights.load_params(converted_copy)
    with pytest.raises(WeightsError, match="make weights"):
        weights.load_params(converted_copy / "empty")


def _resave(folder, arrays):
    """Write a damaged file with a *consistent* manifest: only content checks can catch it."""
    data = safetensors.numpy.save(arrays)
    (folder / "bvlc_googlenet.safetensors").write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_loader_refuses_wrong_shapes_and_nan(converted_copy):
    arrays = store.load_arrays(converted_copy)
    _resave(converted_copy, {**arrays, "conv2/3x3/bias": arrays["conv2/3x3/bias"][:100]})
    with pytest.raises(WeightsError, match=r"conv2/3x3/bias has shape \(100,\)"):
        weights.load_params(converted_copy)
    _resave(converted_copy, {**arrays, "conv2/3x3/bias": np.full(192, np.inf, np.float32)})
    with pytest.raises(WeightsError, match="NaN or Inf"):
        weights.load_params(converted_copy)


def test_weights_variable_is_read_by_the_scripts_not_the_library(weights_dir, tmp_path,
                                                                monkeypatch):
    """$DREAM_JAX_WEIGHTS is --weights' default in a script (the edge); the library's
    default folder is the project's weights/ whatever the environment says."""
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "elsewhere"))
    assert weights.default_dir() == Path(store.__file__).resolve().parents[3] / "weights"
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((32, 40, 3), 128, np.uint8)).save(photo)
    proc = run_main("classify", f"--input={photo}", "--top_k=1", "--json",
                    env={weights.WEIGHTS_ENV: str(weights_dir)})
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 1
    proc = run_main("classify", f"--input={photo}",
                    env={weights.WEIGHTS_ENV: str(tmp_path / "empty")})
    assert_one_line_error(proc, str(tmp_path / "empty"))
    proc = run_main("classify", f"--input={photo}", f"--weights={weights_dir}", "--json",
                    env={weights.WEIGHTS_ENV: str(tmp_path / "empty")})  # the flag wins
    assert proc.returncode == 0, proc.stderr
