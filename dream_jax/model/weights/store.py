"""The converted weights on disk: `<model>.safetensors` + `manifest.json` + labels.

The BVLC GoogLeNet is `bvlc_googlenet.safetensors` with `synset_words.txt`;
another GoogLeNet-architecture model (e.g. Places365) is named after its source
file, with `labels.txt`. The manifest names both files and records the class
count (`num_classes`; a manifest without it means 1000, the BVLC GoogLeNet's).

Loading verifies, in order: the manifest exists and is a JSON object, the
file's sha256 matches it, every parameter is present, float32, with the shape
the model expects (the classifier's width taken from the manifest), and every
value is finite; a manifest that names the BVLC GoogLeNet must hold exactly the
published parameters (their content sha256 is known here, so editing both the
file and the manifest is caught too). The file is read once and these checks
run on the bytes read; a file already verified in this process (same device,
inode, size and mtime) skips the hashing. Each failure is a one-line
`WeightsError`. safetensors is a plain header + raw arrays, so nothing in a
weights file is ever executed.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import safetensors.numpy

from dream_jax.model import googlenet
from dream_jax.io.atomic import atomic_write
from dream_jax.errors import WeightsError

BVLC_MODEL = "bvlc_googlenet"
WEIGHTS_FILE = f"{BVLC_MODEL}.safetensors"
# content_sha256 (see below) of the published BVLC GoogLeNet main tower.
BVLC_GOOGLENET_CONTENT_SHA256 = "0d97f8f33baaacb2610a884fc2a8d6e3ed7be4386343614fdfb2669f2cb12e12"
MANIFEST_FILE = "manifest.json"
LABELS_FILE = "synset_words.txt"
OTHER_LABELS_FILE = "labels.txt"


WEIGHTS_ENV = "DREAM_JAX_WEIGHTS"  # read by the edges (cli, notebooks, Ray actors), never here


def default_dir() -> Path:
    """The project's `weights/` folder: where a folder is not given."""
    return Path(__file__).resolve().parents[3] / "weights"


def flat_key(layer: str, leaf: str) -> str:
    return f"{layer}/{leaf}"


def expected_shapes(classes: int = googlenet.NUM_CLASSES) -> dict[str, tuple[int, ...]]:
    return {flat_key(layer, leaf): shape
            for layer, leaves in googlenet.param_shapes(classes).items()
            for leaf, shape in leaves.items()}


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """A digest of names, shapes and float32 values, independent of file format."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key], dtype="<f4")
        digest.update(f"{key}:{a.shape};".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def check_arrays(arrays: dict[str, np.ndarray], origin: str,
                 classes: int = googlenet.NUM_CLASSES) -> None:
    """Every expected parameter present, right shape (for a classifier of
    `classes` outputs), finite; nothing extra."""
    expected = expected_shapes(classes)
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise WeightsError(f"{origin}: missing parameter(s) {', '.join(missing[:5])}"
                           f"{' ...' if len(missing) > 5 else ''}")
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise WeightsError(f"{origin}: unexpected parameter(s) {', '.join(extra[:5])}")
    for key, shape in expected.items():
        if tuple(arrays[key].shape) != shape:
            raise WeightsError(f"{origin}: {key} has shape {tuple(arrays[key].shape)}, "
                               f"expected {shape}")
        if np.asarray(arrays[key]).dtype.kind != "f":
            raise WeightsError(f"{origin}: {key} has dtype {np.asarray(arrays[key]).dtype}, "
                               f"expected floats")
        if not np.all(np.isfinite(arrays[key])):
            raise WeightsError(f"{origin}: {key} contains NaN or Inf values")


def classes_of(arrays: dict[str, np.ndarray]) -> int:
    """The classifier's width in flat arrays (the model's class count)."""
    kernel = arrays.get(flat_key(googlenet.CLASSIFIER_LAYER, "kernel"))
    return googlenet.NUM_CLASSES if kernel is None or kernel.ndim != 2 else int(kernel.shape[1])


def save(arrays: dict[str, np.ndarray], out_dir: Path, manifest: dict,
         file: str = WEIGHTS_FILE) -> dict:
    """Write the safetensors file and its manifest (file first, manifest last)."""
    classes = classes_of(arrays)
    check_arrays(arrays, "converted weights", classes)
    ordered = {k: np.ascontiguousarray(arrays[k], dtype="<f4") for k in expected_shapes(classes)}
    data = safetensors.numpy.save(ordered)
    atomic_write(out_dir / file, data)
    manifest = {
        "file": file,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "parameter_count": int(sum(a.size for a in ordered.values())),
        "content_sha256": content_sha256(ordered),
        "num_classes": classes,
        **manifest,
    }
    atomic_write(out_dir / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def read_manifest(weights_dir: Path | None = None) -> dict:
    weights_dir = Path(weights_dir or default_dir())
    path = weights_dir / MANIFEST_FILE
    if not path.is_file():
        raise WeightsError(f"no converted weights in {weights_dir} ({MANIFEST_FILE} missing): "
                           f"run `make weights` or scripts/convert_weights.py")
    try:
        manifest = json.loads(path.read_bytes()[:1 << 20].decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise WeightsError(f"{path}: unreadable manifest ({type(e).__name__})") from None
    except OSError as e:
        raise WeightsError(f"{path}: unreadable manifest ({e.strerror or e})") from None
    if not isinstance(manifest, dict):
        raise WeightsError(f"{path}: the manifest is not a JSON object")
    return manifest


def manifest_classes(manifest: dict, origin: str = MANIFEST_FILE) -> int:
    """The model's class count from its manifest; 1000 (ImageNet's) when the
    manifest does not say."""
    classes = manifest.get("num_classes", googlenet.NUM_CLASSES)
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise WeightsError(f"{origin}: num_classes must be a positive integer, not {classes!r}")
    return classes


def num_classes(weights_dir: Path | None = None) -> int:
    """The converted model's class count, from its manifest (nothing else is read)."""
    weights_dir = Path(weights_dir or default_dir())
    return manifest_classes(read_manifest(weights_dir), str(weights_dir / MANIFEST_FILE))


def _file_in(weights_dir: Path, name, what: str) -> Path:
    """A file the manifest names: a plain name inside the weights folder, nothing else."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise WeightsError(f"{weights_dir / MANIFEST_FILE}: bad {what} file name {name!r}")
    return weights_dir / name


def load_arrays(weights_dir: Path | None = None) -> dict[str, np.ndarray]:
    """Verified flat {"layer/kernel": array} from the converted file."""
    weights_dir = Path(weights_dir or default_dir())
    manifest = read_manifest(weights_dir)
    classes = manifest_classes(manifest, str(weights_dir / MANIFEST_FILE))
    path = _file_in(weights_dir, manifest.get("file", WEIGHTS_FILE), "weights")
    if not path.is_file():
        raise WeightsError(f"weights file missing: {path}")
    data, identity = _read_with_identity(path)
    if _verified.get(identity) == manifest.get("sha256"):
        return _parse(data, path, classes)  # these very bytes were checked before
    actual = hashlib.sha256(data).hexdigest()
    if actual != manifest.get("sha256"):
        raise WeightsError(f"{path}: sha256 {actual} does not match the manifest "
                           f"({manifest.get('sha256')}): file corrupted or tampered with")
    arrays = _parse(data, path, classes)
    if _claims_bvlc(manifest) and content_sha256(arrays) != BVLC_GOOGLENET_CONTENT_SHA256:
        raise WeightsError(f"{path}: the manifest names the BVLC GoogLeNet but the parameters "
                           f"are not the published ones: tampered with")
    _verified[identity] = actual
    return arrays


_verified: dict[tuple, str] = {}  # (dev, inode, size, mtime) -> sha256 checked in this process


def _read_with_identity(path: Path) -> tuple[bytes, tuple]:
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            data = f.read()
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror or e})") from None
    return data, (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _claims_bvlc(manifest: dict) -> bool:
    return manifest.get("model") == BVLC_MODEL or manifest.get("file") in (None, WEIGHTS_FILE) \
        or manifest.get("content_sha256") == BVLC_GOOGLENET_CONTENT_SHA256


def _parse(data: bytes, path: Path, classes: int) -> dict[str, np.ndarray]:
    try:
        arrays = safetensors.numpy.load(data)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise WeightsError(f"{path}: not a valid safetensors file ({e})") from None
    check_arrays(arrays, str(path), classes)
    wrong = next((k for k, a in arrays.items() if a.dtype != np.float32), None)
    if wrong:
        raise WeightsError(f"{path}: {wrong} has dtype {arrays[wrong].dtype}, expected float32")
    return arrays


def load_params(weights_dir: Path | None = None) -> dict:
    """The model's parameter pytree {layer: {"kernel", "bias"}}, verified."""
    params: dict[str, dict[str, np.ndarray]] = {}
    for key, array in load_arrays(weights_dir).items():
        layer, leaf = key.rsplit("/", 1)
        params.setdefault(layer, {})[leaf] = array
    return params


_SYNSET = re.compile(r"n\d{8}\s+(.*)")        # ImageNet: "n01440764 tench, Tinca tinca"
_NAME_INDEX = re.compile(r"(\S+)\s+(\d+)")     # MIT Places: "/a/airfield 0"


def label_lines(text: str) -> list[str]:
    """The non-blank lines of a labels file: one class each, in output order."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_label(line: str, index: int) -> str:
    """A class name from one labels line: the synset id dropped ("n01440764 tench"),
    or a trailing class index equal to the line's own dropped together with the
    Places "/a/" prefix ("/a/airfield 0" -> "airfield"); otherwise the line."""
    if match := _SYNSET.fullmatch(line):
        return match.group(1).strip()
    if (match := _NAME_INDEX.fullmatch(line)) and int(match.group(2)) == index:
        return re.sub(r"^/[a-z]/", "", match.group(1))
    return line


def load_labels(weights_dir: Path | None = None) -> list[str]:
    """The model's class names in output order (ImageNet's 1000 for BVLC GoogLeNet),
    exactly one per class of the converted weights."""
    weights_dir = Path(weights_dir or default_dir())
    manifest_path = weights_dir / MANIFEST_FILE
    manifest = read_manifest(weights_dir) if manifest_path.is_file() else {}
    classes = manifest_classes(manifest, str(manifest_path))
    name = manifest.get("labels", {}).get("file", LABELS_FILE) if isinstance(
        manifest.get("labels"), dict) else LABELS_FILE
    path = _file_in(weights_dir, name, "labels")
    if not path.is_file():
        raise WeightsError(f"class labels missing: {path} (re-run the weights conversion)")
    try:
        lines = label_lines(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise WeightsError(f"{path}: not a UTF-8 text file ({e.reason})") from None
    if len(lines) != classes:
        raise WeightsError(f"{path}: {len(lines)} labels, expected {classes} (the model's classes)")
    return [parse_label(line, index) for index, line in enumerate(lines)]
