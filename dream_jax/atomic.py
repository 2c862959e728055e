"""Files that are complete or absent: never half-written, even on SIGKILL.

Contents go to a hidden temp file beside the target (`.<name>.<random>.tmp`),
are fsynced, get the mode a plain `open` would give, and are renamed over the
target in one step. A crash leaves at most a stale temp file, which
`remove_stale_temps` cleans up.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
    """A binary file object whose contents appear at `path` only when complete."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete temp files a killed run left in `folder`; returns how many."""
    stale = list(Path(folder).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
