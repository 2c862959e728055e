"""Shared fixtures: the third-party weights in ../shared (converted once per run).

Tests that need the real weights skip with a reason when ../shared is absent
(a user's machine); CI sets DREAM_JAX_REQUIRE_WEIGHTS=1 so they fail instead.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.caffe_writer import write_net

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_WEIGHTS = SHARED / "weights" / "bvlc_googlenet"
SHARED_DATA = SHARED / "data"


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        reason = f"{what} not found at {path} (only present in the project's CI workplace)"
        if os.environ.get("DREAM_JAX_REQUIRE_WEIGHTS"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    return _need(SHARED_WEIGHTS / "weights", "shared BVLC GoogLeNet weights").parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA, "shared sample photos")


@pytest.fixture(scope="session")
def weights_dir(shared_weights, tmp_path_factory) -> Path:
    from dream_jax.weights import convert
    out = tmp_path_factory.mktemp("weights")
    convert.convert(str(shared_weights), out, progress=False)
    return out


@pytest.fixture(scope="session")
def params(weights_dir):
    from dream_jax import weights
    return weights.load_params(weights_dir)


def caffe_layers(params) -> tuple[dict, dict]:
    """Per-layer blobs in Caffe's (out, in, kH, kW) order, and layer types."""
    layers, types = {}, {}
    for layer, leaves in params.items():
        kernel = np.asarray(leaves["kernel"])
        layers[layer] = [kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T,
                         np.asarray(leaves["bias"])]
        types[layer] = "Convolution" if kernel.ndim == 4 else "InnerProduct"
    return layers, types


@pytest.fixture(scope="session")
def caffemodel(params, tmp_path_factory) -> Path:
    """A .caffemodel (modern `layer` field) written from the shared per-layer files."""
    path = tmp_path_factory.mktemp("caffemodel") / "bvlc_googlenet.caffemodel"
    path.write_bytes(write_net(*caffe_layers(params)))
    return path


def run_script(name: str, *args: str, env: dict | None = None, timeout: float = 600,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run scripts/<name>.py in a fresh interpreter; returns the completed process."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Non-zero exit, a single `error:` line on stderr naming the problem, no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="session", autouse=True)
def _shared_compilation_cache(tmp_path_factory):
    """Script subprocesses share one persistent JAX cache, so each shape compiles once."""
    os.environ.setdefault("DREAM_JAX_CACHE", str(tmp_path_factory.mktemp("jax_cache")))
