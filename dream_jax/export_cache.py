"""A disk cache of lowered (exported) dream steps, so a later run skips tracing.

jax's persistent compilation cache keeps compiled executables, but to find one
jax must first trace and lower the function: for the dream step (GoogLeNet
forward and backward under vmap and scan) that was ~0.8 s of the ~1.1 s a
cached first call still cost on a 2-core CPU. `jax.export` serialises the
lowered StableHLO as flatbuffers (no pickle: loading runs no code), so a later
process deserialises it and goes straight to the compilation cache.

An entry's key covers everything that shapes the module: the function and its
static arguments, the tree, shapes and dtypes of the others, the jax, jaxlib
and flax versions, the backend, and a digest of dream_jax's own source, so an
edited library never reuses a stale module. Entries carry a sha256 of their
payload; a damaged one is rebuilt. Off until `enable(folder)` (the scripts do).
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any, Callable

import flax
import jax
import jaxlib
from absl import logging
from jax import export

from dream_jax import atomic

_folder: Path | None = None
_loaded: dict[str, Callable] = {}  # key -> jitted call of the exported module


def enable(folder: str | Path | None) -> None:
    """Cache exported modules in `folder` (None turns the cache off)."""
    global _folder
    _folder = None if folder is None else Path(folder)
    _loaded.clear()


@functools.cache
def _source_digest() -> str:
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _key(fn, static: dict, args, kwargs) -> str:
    leaves, tree = jax.tree.flatten((args, kwargs))
    device = jax.devices()[0]
    parts = [
        f"{fn.__module__}.{fn.__qualname__}", repr(sorted(static.items())), str(tree),
        repr([(tuple(x.shape), str(x.dtype), bool(getattr(x, "weak_type", False)))
              for x in map(jax.typeof, leaves)]),
        jax.__version__, jaxlib.__version__, flax.__version__, device.platform,
        device.client.platform_version, device.device_kind,
        repr((jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)),
        _source_digest(),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _read(path: Path) -> export.Exported | None:
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        logging.warning("ignoring unreadable exported step %s: %s", path, e)
        return None
    digest, payload = blob[:32], blob[32:]
    if hashlib.sha256(payload).digest() != digest:
        logging.warning("rebuilding damaged exported step %s", path)
        return None
    try:
        return export.deserialize(bytearray(payload))
    except Exception as e:  # noqa: BLE001 -- any unreadable entry is rebuilt, never fatal
        logging.warning("rebuilding unreadable exported step %s: %s", path, e)
        return None


def _write(path: Path, exported: export.Exported) -> None:
    payload = bytes(exported.serialize())
    try:
        atomic.atomic_write(path, hashlib.sha256(payload).digest() + payload)
    except OSError as e:  # a read-only or full cache only costs speed
        logging.warning("could not cache the exported step in %s: %s", path.parent, e)


def call(jitted, static: dict[str, Any], *args, **kwargs):
    """`jitted(*args, **static, **kwargs)`, through the exported-module cache when
    it is enabled. `jitted` is a jax.jit function whose static arguments are
    exactly the keys of `static`."""
    if _folder is None:
        return jitted(*args, **static, **kwargs)
    key = _key(jitted, static, args, kwargs)
    run = _loaded.get(key)
    if run is None:
        run = _loaded[key] = _load_or_export(jitted, key, static, args, kwargs)
    return run(*args, **kwargs)


def _load_or_export(jitted, key, static, args, kwargs) -> Callable:
    path = _folder / f"{jitted.__name__}-{key}.jaxexport"
    exported = _read(path)
    if exported is None:
        try:
            exported = export.export(jitted)(*args, **static, **kwargs)
        except Exception as e:  # noqa: BLE001 -- e.g. a backend-only custom call: run uncached
            logging.warning("not caching %s (jax.export failed: %s)", jitted.__name__, e)
            return functools.partial(jitted, **static)
        _write(path, exported)
    return jax.jit(exported.call)
