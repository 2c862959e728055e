"""Convert GoogLeNet weights (the published BVLC model, or another model of the
same architecture, e.g. MIT's Places365 GoogLeNet) into `weights/*.safetensors`.

Two published forms are read, from a local path or an http(s) URL:
  * the official `bvlc_googlenet.caffemodel` (protobuf NetParameter);
  * caffejs's per-layer raw float32 files: `<source>/weights/<layer>_filter.bin`
    in (out, kH, kW, in) order and `<layer>_bias.bin`, plus an optional
    `SHA256SUMS` that every file is checked against.
Both give byte-identical output. Pickle-based formats are refused outright:
loading them can execute code.

The class count is the source's own: the width of its `loss3/classifier`
(the bias's length). Only the BVLC GoogLeNet's parameters are accepted unless
the caller turns the content check off (`--allow_unverified`); the labels file
must then have one line per class.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dream_jax import __version__
from dream_jax.model import googlenet
from dream_jax.io.atomic import atomic_write
from dream_jax.errors import WeightsError
from dream_jax.model.weights import caffe_proto, fetch, store

# The output of either source form must match the published BVLC GoogLeNet
# unless told otherwise (store checks it again at every load).
BVLC_GOOGLENET_CONTENT_SHA256 = store.BVLC_GOOGLENET_CONTENT_SHA256
LICENCE = ("BVLC GoogLeNet, Caffe model zoo: unrestricted use "
           "(per-layer re-serialisation by the caffejs project: MIT)")
OTHER_LICENCE = "not the BVLC GoogLeNet: the licence is its publisher's (unverified by dream_jax)"
BVLC_MODEL = store.BVLC_MODEL
_CLASSIFIER = googlenet.CLASSIFIER_LAYER
_FEATURES = googlenet.param_shapes()[_CLASSIFIER]["kernel"][0]  # pool5's 1024 channels
_PICKLE_SUFFIXES = (".pth", ".pt", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")


def _classes(source: str, bias_size: int) -> int:
    if bias_size < 1:
        raise WeightsError(f"{source}: {_CLASSIFIER} has no outputs (an empty bias)")
    return bias_size


def _to_flax(layer: str, filters: np.ndarray, bias: np.ndarray, caffe_order: bool,
             classes: int) -> dict:
    """Caffe (out, in, kH, kW) or caffejs (out, kH, kW, in) -> Flax (kH, kW, in, out)."""
    shapes = googlenet.param_shapes(classes)[layer]
    if len(shapes["kernel"]) == 2:  # classifier: (out, in) -> (in, out)
        kernel = filters.reshape(shapes["kernel"][::-1]).T
    else:
        kernel = filters.transpose((2, 3, 1, 0) if caffe_order else (1, 2, 3, 0))
    return {store.flat_key(layer, "kernel"): kernel,
            store.flat_key(layer, "bias"): bias.reshape(-1)}


def _raw_layer_files(layer: str) -> tuple[str, str]:
    return f"weights/{layer}_filter.bin", f"weights/{layer}_bias.bin"


def _read_checksums(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest
    return sums


def read_per_layer(source: str, cache_dir: Path, progress: bool = True):
    """Arrays (Flax layout) and {file: sha256} from the per-layer raw form."""
    sums = _read_checksums(fetch.fetch(source, "SHA256SUMS", cache_dir, progress=progress,
                                       required=False))
    # The class count is the classifier bias's length (raw float32, 4 bytes each).
    relative = _raw_layer_files(_CLASSIFIER)[1]
    size = fetch.fetch(source, relative, cache_dir, sums.get(relative), progress).stat().st_size
    if size % 4:
        raise WeightsError(f"{fetch.join(source, relative)}: {size} bytes, not whole float32 "
                           f"values (truncated or wrong file)")
    classes = _classes(source, size // 4)
    arrays, files = {}, {}
    for layer, leaves in googlenet.param_shapes(classes).items():
        kernel_shape = leaves["kernel"]
        # caffejs stores (out, kH, kW, in); the classifier is (out, in).
        raw_shape = ((kernel_shape[1], kernel_shape[0]) if len(kernel_shape) == 2 else
                     (kernel_shape[3], kernel_shape[0], kernel_shape[1], kernel_shape[2]))
        blobs = []
        for relative, shape in zip(_raw_layer_files(layer), (raw_shape, leaves["bias"])):
            path = fetch.fetch(source, relative, cache_dir, sums.get(relative), progress)
            data = path.read_bytes()
            expected = int(np.prod(shape)) * 4
            if len(data) != expected:
                raise WeightsError(f"{fetch.join(source, relative)}: {len(data)} bytes, expected "
                                   f"{expected} for float32 {shape} (truncated or wrong file)")
            files[relative] = fetch.sha256_file(path)
            blobs.append(np.frombuffer(data, dtype="<f4").reshape(shape))
        arrays.update(_to_flax(layer, *blobs, caffe_order=False, classes=classes))
    return arrays, files


def read_caffemodel(source: str, cache_dir: Path, progress: bool = True):
    """Arrays (Flax layout) and {file: sha256} from a .caffemodel."""
    name = source.rstrip("/").rsplit("/", 1)[-1]
    path = (fetch.download(source, cache_dir, progress=progress) if fetch.is_url(source)
            else Path(source))
    if not path.is_file():
        raise WeightsError(f"weights source file not found: {path}")
    try:
        blobs = caffe_proto.read_blobs(path.read_bytes())
    except ValueError as e:
        raise WeightsError(f"{source}: not a valid .caffemodel ({e})") from None
    if _CLASSIFIER not in blobs or len(blobs[_CLASSIFIER]) != 2:
        raise WeightsError(f"{source}: layer {_CLASSIFIER} missing or without weights and bias")
    classes = _classes(source, blobs[_CLASSIFIER][1].size)
    arrays = {}
    for layer, leaves in googlenet.param_shapes(classes).items():
        if layer not in blobs or len(blobs[layer]) != 2:
            raise WeightsError(f"{source}: layer {layer} missing or without weights and bias")
        filters, bias = blobs[layer]
        kernel = leaves["kernel"]
        want = ((kernel[1], kernel[0]) if len(kernel) == 2 else
                (kernel[3], kernel[2], kernel[0], kernel[1]))
        if filters.size != int(np.prod(want)) or bias.size != leaves["bias"][0]:
            raise WeightsError(f"{source}: {layer} has shapes {filters.shape}, {bias.shape}; "
                               f"expected {want}, {leaves['bias']}")
        arrays.update(_to_flax(layer, filters.reshape(want), bias, caffe_order=True,
                               classes=classes))
    return arrays, {name: fetch.sha256_file(path)}


def _label_file(labels: str | None, labels_base: str, cache_dir: Path, progress: bool) -> Path:
    """synset_words.txt: given explicitly, else beside the weights source."""
    if labels is None:
        return fetch.fetch(labels_base, store.LABELS_FILE, cache_dir, progress=progress)
    if fetch.is_url(labels):
        return fetch.download(labels, cache_dir, progress=progress)
    if not Path(labels).is_file():
        raise WeightsError(f"class labels file not found: {labels}")
    return Path(labels)


def model_name(source: str) -> str:
    """A file-name-safe model name from the source's last path component
    ("…/googlenet_places365.caffemodel" -> "googlenet_places365")."""
    last = source.rstrip("/").rsplit("/", 1)[-1]
    stem = last[:-len(".caffemodel")] if last.lower().endswith(".caffemodel") else last
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._-") or "googlenet"


def convert(source: str, out_dir: Path, labels: str | None = None,
            expected_content_sha256: str | None = BVLC_GOOGLENET_CONTENT_SHA256,
            progress: bool = True) -> dict:
    """Read `source` (path or URL, either form), verify, write safetensors + manifest."""
    out_dir = Path(out_dir)
    cache_dir = out_dir / "downloads"
    base = source.rstrip("/")
    if base.lower().endswith(_PICKLE_SUFFIXES):
        raise WeightsError(f"{source}: pickle-based weight formats are refused (loading them "
                           f"can execute code); use the .caffemodel or the per-layer files")
    if base.lower().endswith(".caffemodel"):
        form = "caffemodel"
        arrays, files = read_caffemodel(source, cache_dir, progress)
        labels_base = base.rsplit("/", 1)[0] if fetch.is_url(base) else str(Path(base).parent)
    elif fetch.is_url(source) or Path(source).is_dir():
        form = "per-layer raw float32 (caffejs)"
        arrays, files = read_per_layer(source, cache_dir, progress)
        labels_base = base
    else:
        raise WeightsError(f"{source}: not a .caffemodel file nor a folder/URL of per-layer "
                           f"weight files")
    classes = store.classes_of(arrays)
    store.check_arrays(arrays, source, classes)
    digest = store.content_sha256(arrays)
    if expected_content_sha256 and digest != expected_content_sha256:
        other = (f"it has {classes} classes, not 1000: another model" if classes != 1000
                 else "a file is corrupted or tampered with, or it is another model")
        raise WeightsError(f"{source}: parameters do not match the published BVLC GoogLeNet "
                           f"(content sha256 {digest}, expected {expected_content_sha256}); "
                           f"{other} (--allow_unverified accepts other GoogLeNet weights)")
    label_path = _label_file(labels, labels_base, cache_dir, progress)
    label_bytes = label_path.read_bytes()
    try:
        lines = store.label_lines(label_bytes.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise WeightsError(f"{label_path}: class labels are not UTF-8 text ({e.reason})") from None
    if len(lines) != classes:
        raise WeightsError(f"{label_path}: {len(lines)} class labels, expected {classes} "
                           f"(one line per class of {_CLASSIFIER})")
    bvlc = digest == BVLC_GOOGLENET_CONTENT_SHA256
    name = BVLC_MODEL if bvlc else model_name(source)
    labels_file = store.LABELS_FILE if bvlc else store.OTHER_LABELS_FILE
    atomic_write(out_dir / labels_file, label_bytes)
    return store.save(arrays, out_dir, {
        "model": name,
        "source": {"location": source, "form": form, "files": files},
        "licence": LICENCE if bvlc else OTHER_LICENCE,
        "labels": {"file": labels_file, "sha256": fetch.sha256_file(out_dir / labels_file)},
        "converter": f"dream_jax {__version__}",
    }, file=f"{name}.safetensors")
