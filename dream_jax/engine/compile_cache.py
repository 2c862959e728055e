"""Compiled dream octaves: made in the background, kept in memory and on disk.

`compile_ahead` starts every octave of a dream at once: they are traced in
order on one thread (Python, under the GIL) and each is compiled on a thread
pool as soon as it is traced (XLA compiles outside the GIL), so later octaves
are traced and compiled while earlier ones compile and run; `executable`
returns a compiled octave for given argument shapes.

On disk there are two caches: jax's persistent compilation cache (compiled
executables) and exported modules. jax can only consult its cache after
tracing and lowering the function, which for a GoogLeNet octave costs about as
much as running a small one; `jax.export` serialises the lowered StableHLO as
flatbuffers (no pickle: loading runs no code), so a later process
deserialises it and goes straight to the compilation cache.

An entry's key covers everything that shapes the module: the function and its
static arguments, the tree, shapes and dtypes of the others, the jax, jaxlib
and flax versions, the backend, and a digest of dream_jax's own source, so an
edited library never reuses a stale module. An exported entry is bound to its
key: it starts with a sha256 over key and payload, written with it in one
atomic rename, so a damaged entry, or one copied under another key, is a miss
(rebuilt), never used; an entry that deserialises but does not lower for these
arguments is a miss too.

jax's own entries (compiled executables) cannot be checked through jax's
public API, so the folder itself is the guard: it is created private (0700),
and a folder (or a folder above it) that is not the user's or root's, or that
others may write (without the sticky bit), turns both caches off with one
warning, as ssh does with its keys. What can write there can already run code
as the user.

jax's cache is process-wide jax configuration, so only the caller turns the
caches on: every script does (cli, in `default_folder(os.environ)`:
$DREAM_JAX_CACHE, default ~/.cache/dream_jax; DREAM_JAX_CACHE=off turns them
off); from Python, `enable(folder)` / `enable(None)`. A library call never
changes jax's configuration by itself; without a folder, compiled octaves are
still kept in memory for the process.
"""
from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import Any, Callable, Mapping

import flax
import jax
import jaxlib
from absl import logging
from jax import export
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from dream_jax.io import atomic

_folder: Path | None = None
_compiled: dict[str, Callable] = {}  # key -> compiled executable
_lock = threading.Lock()
_tracing = threading.Lock()  # one trace at a time (see _lower)
OFF = "off"


CACHE_ENV = "DREAM_JAX_CACHE"


def default_folder(environ: Mapping[str, str]) -> Path | None:
    """The scripts' folder: $DREAM_JAX_CACHE in `environ`, else
    ~/.cache/dream_jax; None when set to "off"."""
    value = environ.get(CACHE_ENV, "")
    if value.lower() == OFF:
        return None
    return Path(value) if value else Path.home() / ".cache" / "dream_jax"


def private_folder(folder: Path) -> str | None:
    """Create `folder` (and jax/, exported/ in it) private to the user; None if it
    is safe to cache in, else why not (see the module docstring)."""
    try:
        for sub in (folder, folder / "jax", folder / "exported"):
            sub.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in (folder / "jax", folder / "exported", folder):
            problem = _unsafe(sub, sticky_ok=False)
            if problem:
                return problem
        for above in folder.resolve().parents:
            problem = _unsafe(above, sticky_ok=True)
            if problem:
                return problem
    except OSError as e:
        return f"cannot create it ({e.strerror or e})"
    return None


def _unsafe(path: Path, sticky_ok: bool) -> str | None:
    info = path.stat()
    if info.st_uid not in (os.geteuid(), 0):
        return f"{path} belongs to another user (uid {info.st_uid})"
    if info.st_mode & 0o022 and not (sticky_ok and info.st_mode & stat.S_ISVTX):
        return f"{path} is writable by others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def enable(folder: str | Path | None) -> None:
    """Keep compiled octaves in `folder` (jax's compilation cache in jax/, exported
    modules in exported/); None turns both off. A folder that is not private to
    the user (see `private_folder`) turns them off too, with one warning."""
    global _folder
    if folder is not None:
        folder = Path(folder).expanduser()
        problem = private_folder(Path(folder))
        if problem:
            logging.warning("not caching compiled code in %s: %s", folder, problem)
            folder = None
    _folder = None if folder is None else Path(folder) / "exported"
    _compiled.clear()
    jax.config.update("jax_compilation_cache_dir", None if folder is None
                      else str(Path(folder) / "jax"))
    jax_cache.reset_cache()  # jax opens its cache once: make it see the new folder
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@functools.cache
def _source_digest() -> str:
    package = Path(__file__).resolve().parents[1]  # the whole dream_jax package
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _device():
    """The device a call compiles for (honours `jax.default_device`)."""
    device = jax.config.jax_default_device or jax.devices()[0]
    return jax.devices(device)[0] if isinstance(device, str) else device


def _key(fn, static: dict, args) -> str:
    leaves, tree = jax.tree.flatten(args)
    device = _device()
    parts = [
        f"{fn.__module__}.{fn.__qualname__}", repr(sorted(static.items())), str(tree),
        repr([(tuple(x.shape), str(x.dtype), _placement(x)) for x in leaves]),
        jax.__version__, jaxlib.__version__, flax.__version__, device.platform,
        device.client.platform_version, device.device_kind,
        repr((jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)),
        _source_digest(),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


_MAGIC = b"dream_jax exported 2\n"


def _seal(key: str, payload: bytes) -> bytes:
    return hashlib.sha256(key.encode() + b"\0" + payload).digest()


def _read(path: Path, key: str) -> export.Exported | None:
    """The entry at `path` if it is whole and was written for `key`, else None."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        logging.warning("ignoring unreadable exported step %s: %s", path, e)
        return None
    head, payload = blob[:len(_MAGIC) + 32], blob[len(_MAGIC) + 32:]
    if head != _MAGIC + _seal(key, payload):
        logging.warning("rebuilding exported step %s (damaged, or not written for this key)",
                        path)
        return None
    try:
        return export.deserialize(bytearray(payload))
    except Exception as e:  # noqa: BLE001 -- any unreadable entry is rebuilt, never fatal
        logging.warning("rebuilding unreadable exported step %s: %s", path, e)
        return None


def _write(path: Path, key: str, exported: export.Exported) -> None:
    payload = bytes(exported.serialize())
    try:
        atomic.atomic_write(path, _MAGIC + _seal(key, payload) + payload)
    except OSError as e:  # a read-only or full cache only costs speed
        logging.warning("could not cache the exported step in %s: %s", path.parent, e)


def abstract(tree):
    """Arrays (or ShapeDtypeStructs) -> ShapeDtypeStructs: what a compilation depends on.
    A mesh placement (NamedSharding) is kept, or the executable would be one device's."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                       sharding=_mesh_sharding(x)), tree)


def _mesh_sharding(x):
    sharding = getattr(x, "sharding", None)
    return sharding if isinstance(sharding, jax.sharding.NamedSharding) else None


def _placement(x) -> str:
    """A leaf's mesh placement for the key: its spec and the devices, in mesh order."""
    sharding = _mesh_sharding(x)
    if sharding is None:
        return ""
    return f"{sharding.spec}@{[d.id for d in sharding.mesh.devices.flat]}"


def executable(jitted, static: dict[str, Any], *args) -> Callable:
    """`jitted` compiled for arguments shaped like `args` (arrays or
    ShapeDtypeStructs; `static` are its static arguments): call it with the
    dynamic arguments only. From memory, else the exported module on disk (no
    tracing) and jax's compilation cache, else traced and compiled."""
    return _compile(*_lower(jitted, static, args))


def _lower(jitted, static, args) -> tuple[str, Any]:
    """(key, the compiled executable if this process has it, else the lowered
    module to compile). Tracing holds the GIL, so it is done one at a time."""
    args = abstract(args)
    key = _key(jitted, static, args)
    with _lock:
        if key in _compiled:
            return key, _compiled[key]
    with _tracing:
        exported = _load_or_export(jitted, key, static, args) if _folder is not None else None
        if exported is not None:
            try:
                return key, jax.jit(exported.call).lower(*args)
            except Exception as e:  # noqa: BLE001 -- an entry that does not fit is a miss
                logging.warning("not using the exported %s (%s); tracing it", jitted.__name__, e)
        return key, jitted.lower(*args, **static)


def _compile(key: str, lowered) -> Callable:
    if not isinstance(lowered, jax.stages.Lowered):
        return lowered  # compiled already
    compiled = lowered.compile()  # XLA, outside the GIL
    with _lock:
        return _compiled.setdefault(key, compiled)


@functools.cache
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1),
                                                 thread_name_prefix="dream_jax-compile")


@functools.cache
def _tracer() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                 thread_name_prefix="dream_jax-trace")


def compile_ahead(jitted, calls: list[tuple[dict, tuple]]) -> list[concurrent.futures.Future]:
    """Start `executable(jitted, static, *args)` for each (static, args) and
    return their futures: traced in order on one thread (so the first octave
    needed is the first ready), each compiled on a thread pool as soon as it is
    traced. The caller's `jax.default_device` (thread-local) goes with them."""
    device = jax.config.jax_default_device

    def lower_for_caller(static, args):
        with jax.default_device(device):
            return _lower(jitted, static, args)
    traced = [_tracer().submit(lower_for_caller, static, args) for static, args in calls]
    return [_pool().submit(lambda t: _compile(*t.result()), t) for t in traced]


def _load_or_export(jitted, key, static, args) -> export.Exported | None:
    """The exported module from disk, or exported now and written; None when jax
    cannot export it (then it is compiled uncached)."""
    path = _folder / f"{jitted.__name__}-{key}.jaxexport"
    exported = _read(path, key)
    if exported is None:
        try:
            exported = export.export(jitted)(*args, **static)
        except Exception as e:  # noqa: BLE001 -- e.g. a backend-only custom call
            logging.warning("not caching %s (jax.export failed: %s)", jitted.__name__, e)
            return None
        _write(path, key, exported)
    return exported
