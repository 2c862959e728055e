"""Shared fixtures: the third-party weights in ../shared (converted once per run),
and two ways to run a script: `run_script` (a fresh interpreter) and `run_main`
(this interpreter, for the many cases that end in a one-line error).

Tests that need the real weights skip with a reason when ../shared is absent
(a user's machine); CI sets DREAM_JAX_REQUIRE_WEIGHTS=1 so they fail instead.
"""
from __future__ import annotations

import ast
import contextlib
import io
import logging
import os
import runpy
import subprocess
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
from absl import app as absl_app
from absl import flags as absl_flags
from absl import logging as absl_logging

from tests.caffe_writer import write_net

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_WEIGHTS = SHARED / "weights" / "bvlc_googlenet"
SHARED_DATA = SHARED / "data"
# Quick engine settings: a shallow layer compiles fast on 2 CPU cores.
QUICK_LAYER = "inception_3b/output"
QUICK_FLAGS = ["--octaves=2", "--steps=2", f"--objective={QUICK_LAYER}"]


def smooth_photo(seed: int = 0, size: tuple[int, int] = (96, 112)) -> np.ndarray:
    """A photo-like uint8 RGB (height, width) = size: seeded noise upsampled
    smoothly, so it has structure at several scales (and JPEG keeps it close)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[0] // 8 + 1, size[1] // 8 + 1, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize(size[::-1], Image.BICUBIC))


def save_noise(path, size: tuple[int, int] = (72, 96), seed: int = 0) -> Path:
    """Seeded uint8 noise (height, width) = size written to `path` (format by suffix)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return Path(path)


def to_model(rgb):
    """uint8 RGB -> the dream's model space, as a jax array."""
    import jax.numpy as jnp
    from dream_jax.model import preprocess
    return jnp.asarray(preprocess.to_model(rgb, preprocess.DREAM_MEAN_BGR))


def imported_names(source: str) -> list[tuple[int, str]]:
    """(line, dotted name) of each name `source` imports: `import a.b` gives a.b,
    `from a import b` a.b, `from .a import b` .a.b (the import-rule tests read these)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found += [(node.lineno, f"{module}.{alias.name}" if node.module else
                       f"{module}{alias.name}") for alias in node.names]
    return found


@contextlib.contextmanager
def compilations():
    """The names of the programs XLA compiles (or loads) inside the block
    (jax's public monitoring events)."""
    import jax
    names = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(kwargs.get("fun_name"))
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


class PicklePayload:
    """A pickle that creates `marker` when unpickled: the program must never run it."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


TORCH_ABSENT = ("PyTorch, the reference implementation, is not installed (its CPU build is "
                "on disk for Python 3.11 only)")


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
    from dream_jax.model.weights import convert
    out = tmp_path_factory.mktemp("weights")
    convert.convert(str(shared_weights), out, progress=False)
    return out


@pytest.fixture(scope="session")
def params(weights_dir):
    from dream_jax.model import weights
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


def _script(name: str) -> Path:
    """scripts/<name>.py, or the file `name` when it ends in .py."""
    return Path(name) if name.endswith(".py") else ROOT / "scripts" / f"{name}.py"


def run_script(name: str, *args: str, env: dict | None = None, timeout: float = 600,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run scripts/<name>.py in a fresh interpreter; returns the completed process."""
    return subprocess.run([sys.executable, str(_script(name)), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **(env or {})})


# --- in-process script runs ------------------------------------------------------------
# A script run costs a fresh interpreter ~5 s of imports, weights and cache loading
# on a 2-core machine; most cases only check that a bad flag or file ends in one
# `error:` line. `run_main` runs the script in this interpreter instead, as a fresh
# process would see it: the script's flags defined anew on an unparsed FLAGS, absl's
# one-time app and logging set-up redone, stdout and stderr captured at the file
# descriptors (so C++ logging lands there too), the interpreter's default warning
# filters, and everything the run changed put back afterwards.

absl_app.define_help_flags()  # app.run defines --help & co. once per process: keep them
_BASE_FLAGS = frozenset(absl_flags.FLAGS)  # absl's own (logging, app, help)

# The jax options and module globals a script run may set (the compilation caches).
_JAX_OPTIONS = ("jax_enable_compilation_cache", "jax_compilation_cache_dir",
                "jax_persistent_cache_min_compile_time_secs",
                "jax_persistent_cache_min_entry_size_bytes")
_MODULE_GLOBALS = {"dream_jax.engine.compile_cache": ("_folder", "_compiled")}


def _drop_script_flags() -> None:
    """Undefine the flags a script defined and unparse absl's own."""
    for name in set(absl_flags.FLAGS) - _BASE_FLAGS:
        if name in absl_flags.FLAGS:  # a short name goes with its flag
            delattr(absl_flags.FLAGS, name)
    absl_flags.FLAGS.unparse_flags()


def _reset_jax_cache() -> None:
    """jax decides once per process whether its persistent cache is in use."""
    try:
        from jax._src import compilation_cache
    except ImportError:  # a jax without it: runs then share the first decision
        return
    getattr(compilation_cache, "reset_cache", lambda: None)()


@contextlib.contextmanager
def _fresh_process_state(argv: list[str], env: dict | None, cwd: Path | None):
    import jax
    saved_flags = {k: absl_flags.FLAGS.__dict__[k]
                   for k in ("__flags_parsed", "__unparse_flags_called")}
    saved_app = (absl_app._run_init.done, absl_app._register_and_parse_flags_with_usage.done)
    saved_logging = (logging.root.handlers[:], logging.root.level,
                     absl_logging.get_absl_logger().level,
                     absl_logging.get_absl_handler().python_handler.stream)
    saved_jax = {name: getattr(jax.config, name) for name in _JAX_OPTIONS}
    saved_globals = {(module, name): (dict(value) if isinstance(value, dict) else value)
                     for module, names in _MODULE_GLOBALS.items() if module in sys.modules
                     for name in names
                     for value in [getattr(sys.modules[module], name, None)]}
    saved_sys = sys.argv, sys.path[:], os.getcwd(), os.environ.copy()
    saved_faulthandler = absl_app.faulthandler
    try:
        _drop_script_flags()
        absl_app._run_init.done = absl_app._register_and_parse_flags_with_usage.done = False
        absl_app.faulthandler = None  # keep pytest's faulthandler on pytest's stderr
        absl_logging.get_absl_handler().python_handler.stream = sys.stderr
        _reset_jax_cache()
        os.environ.update(env or {})
        if cwd is not None:
            os.chdir(cwd)
        sys.argv = argv
        sys.path.insert(0, str(Path(argv[0]).parent))  # as `python scripts/x.py` has it
        with warnings.catch_warnings():
            warnings.resetwarnings()  # the interpreter's defaults, shown on (captured) stderr
            for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning,
                             DeprecationWarning):
                warnings.filterwarnings("ignore", category=category)
            warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
            warnings.showwarning = _show_warning
            yield
    finally:
        _drop_script_flags()
        absl_flags.FLAGS.__dict__.update(saved_flags)
        absl_app._run_init.done, absl_app._register_and_parse_flags_with_usage.done = saved_app
        absl_app.faulthandler = saved_faulthandler
        logging.root.handlers[:], level, absl_level, stream = saved_logging
        logging.root.setLevel(level)
        absl_logging.get_absl_logger().setLevel(absl_level)
        absl_logging.get_absl_handler().python_handler.stream = stream
        for name, value in saved_jax.items():
            jax.config.update(name, value)
        _reset_jax_cache()
        for (module, name), value in saved_globals.items():
            setattr(sys.modules[module], name, value)
        sys.argv, sys.path[:], cwd_before, environ = saved_sys
        os.chdir(cwd_before)
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update({k: v for k, v in environ.items() if os.environ.get(k) != v})


def _show_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _captured_output():
    """Point fds 1 and 2 (and sys.stdout/stderr on them) at temp files; yields a
    function returning what was written to each."""
    sys.stdout.flush()
    sys.stderr.flush()
    files = [tempfile.TemporaryFile() for _ in range(2)]
    saved_fds = [os.dup(1), os.dup(2)]
    saved_streams = sys.stdout, sys.stderr
    try:
        for fd, file in zip((1, 2), files):
            os.dup2(file.fileno(), fd)
        sys.stdout, sys.stderr = (
            io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8",
                             errors="backslashreplace", write_through=True) for fd in (1, 2))
        yield lambda: [(file.seek(0), file.read().decode("utf-8", "replace"))[1]
                       for file in files]
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = saved_streams
        for fd, saved in zip((1, 2), saved_fds):
            os.dup2(saved, fd)
            os.close(saved)
        for file in files:
            file.close()


def _exit_status(code) -> int:
    """What the interpreter makes of SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_main(name: str, *args: str, env: dict | None = None, cwd: Path | None = None,
             timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run scripts/<name>.py (or the file `name`, when it ends in .py) with `args` in
    this interpreter, as `run_script` would in a fresh one: the same CompletedProcess
    (returncode, stdout, stderr). An uncaught exception is printed as a traceback with
    status 1, as the interpreter does. `timeout` is accepted for symmetry with
    run_script and not enforced."""
    path = _script(name)
    argv = [str(path), *args]
    with _captured_output() as read_output:
        with _fresh_process_state(argv, env, cwd):
            try:
                runpy.run_path(str(path), run_name="__main__")
                status = 0
            except SystemExit as e:
                status = _exit_status(e.code)
            except Exception:  # noqa: BLE001 -- reported as the interpreter would
                traceback.print_exc()
                status = 1
        stdout, stderr = read_output()
    return subprocess.CompletedProcess(argv, status, stdout, stderr)


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
