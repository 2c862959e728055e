"""Convert the published BVLC GoogLeNet weights into `weights/*.safetensors`.

Two published forms are read, from a local path or an http(s) URL:
  * the official `bvlc_googlenet.caffemodel` (protobuf NetParameter);
  * caffejs's per-layer raw float32 files: `<source>/weights/<layer>_filter.bin`
    in (out, kH, kW, in) order and `<layer>_bias.bin`, plus an optional
    `SHA256SUMS` that every file is checked against.
Both give byte-identical output. Pickle-based formats are refused outright:
loading them can execute code.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dream_jax import __version__, googlenet
from dream_jax.atomic import atomic_write
from dream_jax.errors import WeightsError
from dream_jax.weights import caffe_proto, fetch, store

# content_sha256 (see store.content_sha256) of the published BVLC GoogLeNet main
# tower; the output of either source form must match unless told otherwise.
BVLC_GOOGLENET_CONTENT_SHA256 = "0d97f8f33baaacb2610a884fc2a8d6e3ed7be4386343614fdfb2669f2cb12e12"
LICENCE = ("BVLC GoogLeNet, Caffe model zoo: unrestricted use "
           "(per-layer re-serialisation by the caffejs project: MIT)")
_PICKLE_SUFFIXES = (".pth", ".pt", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")


def _to_flax(layer: str, filters: np.ndarray, bias: np.ndarray, caffe_order: bool) -> dict:
    """Caffe (out, in, kH, kW) or caffejs (out, kH, kW, in) -> Flax (kH, kW, in, out)."""
    shapes = googlenet.param_shapes()[layer]
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
    arrays, files = {}, {}
    for layer, leaves in googlenet.param_shapes().items():
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
        arrays.update(_to_flax(layer, *blobs, caffe_order=False))
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
    arrays = {}
    for layer, leaves in googlenet.param_shapes().items():
        if layer not in blobs or len(blobs[layer]) != 2:
            raise WeightsError(f"{source}: layer {layer} missing or without weights and bias")
        filters, bias = blobs[layer]
        kernel = leaves["kernel"]
        want = ((kernel[1], kernel[0]) if len(kernel) == 2 else
                (kernel[3], kernel[2], kernel[0], kernel[1]))
        if filters.size != int(np.prod(want)) or bias.size != leaves["bias"][0]:
            raise WeightsError(f"{source}: {layer} has shapes {filters.shape}, {bias.shape}; "
                               f"expected {want}, {leaves['bias']}")
        arrays.update(_to_flax(layer, filters.reshape(want), bias, caffe_order=True))
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
    store.check_arrays(arrays, source)
    digest = store.content_sha256(arrays)
    if expected_content_sha256 and digest != expected_content_sha256:
        raise WeightsError(f"{source}: parameters do not match the published BVLC GoogLeNet "
                           f"(content sha256 {digest}, expected {expected_content_sha256}); "
                           f"a file is corrupted or tampered with")
    label_bytes = _label_file(labels, labels_base, cache_dir, progress).read_bytes()
    lines = [line for line in label_bytes.decode("utf-8", "replace").splitlines() if line.strip()]
    if len(lines) != googlenet.NUM_CLASSES:
        raise WeightsError(f"class labels: {len(lines)} lines, expected {googlenet.NUM_CLASSES}")
    atomic_write(out_dir / store.LABELS_FILE, label_bytes)
    return store.save(arrays, out_dir, {
        "model": "bvlc_googlenet",
        "source": {"location": source, "form": form, "files": files},
        "licence": LICENCE,
        "labels": {"file": store.LABELS_FILE, "sha256": fetch.sha256_file(out_dir / store.LABELS_FILE)},
        "converter": f"dream_jax {__version__}",
    })
