"""The converted weights on disk: `bvlc_googlenet.safetensors` + `manifest.json`.

Loading verifies, in order: the manifest exists, the file's sha256 matches it,
every parameter is present with the shape the model expects, and every value
is finite. Each failure is a one-line `WeightsError`. safetensors is a plain
header + raw arrays, so nothing in a weights file is ever executed.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import safetensors.numpy

from dream_jax import googlenet
from dream_jax.atomic import atomic_write
from dream_jax.errors import WeightsError
from dream_jax.weights.fetch import sha256_file

WEIGHTS_FILE = "bvlc_googlenet.safetensors"
MANIFEST_FILE = "manifest.json"
LABELS_FILE = "synset_words.txt"


def default_dir() -> Path:
    """$DREAM_JAX_WEIGHTS, else the project's `weights/` folder."""
    env = os.environ.get("DREAM_JAX_WEIGHTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "weights"


def flat_key(layer: str, leaf: str) -> str:
    return f"{layer}/{leaf}"


def expected_shapes() -> dict[str, tuple[int, ...]]:
    return {flat_key(layer, leaf): shape
            for layer, leaves in googlenet.param_shapes().items() for leaf, shape in leaves.items()}


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """A digest of names, shapes and float32 values, independent of file format."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key], dtype="<f4")
        digest.update(f"{key}:{a.shape};".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def check_arrays(arrays: dict[str, np.ndarray], origin: str) -> None:
    """Every expected parameter present, right shape, finite; nothing extra."""
    expected = expected_shapes()
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
        if not np.all(np.isfinite(arrays[key])):
            raise WeightsError(f"{origin}: {key} contains NaN or Inf values")


def save(arrays: dict[str, np.ndarray], out_dir: Path, manifest: dict) -> dict:
    """Write the safetensors file and its manifest (file first, manifest last)."""
    check_arrays(arrays, "converted weights")
    ordered = {k: np.ascontiguousarray(arrays[k], dtype="<f4") for k in expected_shapes()}
    data = safetensors.numpy.save(ordered)
    atomic_write(out_dir / WEIGHTS_FILE, data)
    manifest = {
        "file": WEIGHTS_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "parameter_count": int(sum(a.size for a in ordered.values())),
        "content_sha256": content_sha256(ordered),
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
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: unreadable manifest ({e})") from None


def load_arrays(weights_dir: Path | None = None) -> dict[str, np.ndarray]:
    """Verified flat {"layer/kernel": array} from the converted file."""
    weights_dir = Path(weights_dir or default_dir())
    manifest = read_manifest(weights_dir)
    path = weights_dir / manifest.get("file", WEIGHTS_FILE)
    if not path.is_file():
        raise WeightsError(f"weights file missing: {path}")
    actual = sha256_file(path)
    if actual != manifest.get("sha256"):
        raise WeightsError(f"{path}: sha256 {actual} does not match the manifest "
                           f"({manifest.get('sha256')}): file corrupted or tampered with")
    try:
        arrays = safetensors.numpy.load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise WeightsError(f"{path}: not a valid safetensors file ({e})") from None
    check_arrays(arrays, str(path))
    return arrays


def load_params(weights_dir: Path | None = None) -> dict:
    """The model's parameter pytree {layer: {"kernel", "bias"}}, verified."""
    params: dict[str, dict[str, np.ndarray]] = {}
    for key, array in load_arrays(weights_dir).items():
        layer, leaf = key.rsplit("/", 1)
        params.setdefault(layer, {})[leaf] = array
    return params


def load_labels(weights_dir: Path | None = None) -> list[str]:
    """The 1000 ImageNet class names in output order."""
    path = Path(weights_dir or default_dir()) / LABELS_FILE
    if not path.is_file():
        raise WeightsError(f"class labels missing: {path} (re-run the weights conversion)")
    labels = [line.split(" ", 1)[1].strip() if " " in line else line.strip()
              for line in path.read_text().splitlines() if line.strip()]
    if len(labels) != googlenet.NUM_CLASSES:
        raise WeightsError(f"{path}: {len(labels)} labels, expected {googlenet.NUM_CLASSES}")
    return labels
