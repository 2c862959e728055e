"""Files that are complete or absent: never half-written, even on SIGKILL.

Contents go to a hidden temp file beside the target, are fsynced, get the mode
a plain `open` would give, and are renamed over the target in one step. A
crash leaves at most a stale temp file. Temp names carry their writer:
`.<target, cut to 64 chars>.<host>-<pid>.<random>.tmp` (host: a digest of the
host name and boot id), so `remove_stale_temps` removes only temps whose writer
is dead: on this host, a pid that no longer runs; from another host (a shared
folder), or named by an older dream_jax, one untouched for `FOREIGN_AGE`.
Temp names stay short whatever the target's length.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import socket
import tempfile
import time
from pathlib import Path

FOREIGN_AGE = 3600.0  # seconds: a temp lives for one write, which takes seconds
_TEMP = re.compile(r"\.(?P<target>.*)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[^.]+\.tmp")


@functools.cache
def host_id() -> str:
    """8 hex digits naming this host and boot (a pid means nothing elsewhere)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return hashlib.sha256(f"{socket.gethostname()}\0{boot}".encode()).hexdigest()[:8]


def _mkstemp(folder: Path, target: str) -> tuple[int, str]:
    short = os.fsdecode(os.fsencode(target)[:64])  # bytes, as file systems count
    return tempfile.mkstemp(prefix=f".{short}.{host_id()}-{os.getpid()}.",
                            suffix=".tmp", dir=folder)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
    """A binary file object whose contents appear at `path` only when complete."""
    path = Path(path)
    fd, tmp = _mkstemp(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as f:
        f.write(data)


def probe(folder: str | os.PathLike) -> None:
    """Create and remove a temp file in `folder` (raises OSError if it cannot):
    the only sure test of writability (root passes `os.access` on read-only
    mounts). Named like any temp, so a crash here leaves one `remove_stale_temps` takes."""
    fd, tmp = _mkstemp(Path(folder), "write-check")
    os.close(fd)
    os.unlink(tmp)


def writer_is_dead(name: str, mtime: float, now: float | None = None) -> bool:
    """Whether the temp file `name` (modified at `mtime`) was left by a dead writer."""
    match = _TEMP.fullmatch(name)
    if match is None or match["host"] != host_id():
        return (time.time() if now is None else now) - mtime > FOREIGN_AGE
    pid = int(match["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. another user's live process
        return False
    return False


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete the temp files dead writers left in `folder`; returns how many."""
    removed = 0
    for path in Path(folder).glob(".*.tmp"):
        try:
            if writer_is_dead(path.name, path.lstat().st_mtime):
                path.unlink()
                removed += 1
        except OSError:  # gone meanwhile, or not ours to remove
            pass
    return removed
