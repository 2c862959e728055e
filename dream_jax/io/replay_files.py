"""The files a replayed dream was made from: found by bare name, checked by sha256.

A PNG's record names its input, guide and masks by file name only, and the PNG
may be crafted, so the name is taken only when it is a bare name (no folder,
no '..'; checked by the record schema and again here) and looked up in two
places: beside the PNG, then in the working directory. The first regular file
there whose sha256 is the recorded one is used; a same-named file that differs
does not stop the search. Files are hashed in a stream, in bounded chunks.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from dream_jax.io import image_io, record
from dream_jax.errors import UserError
from dream_jax.io.outputs import same_file

_CHUNK = 1 << 20


def sha256_of(path: str | os.PathLike) -> str | None:
    """The sha256 of a regular file, read in chunks; None for anything else
    (missing, a folder, a device, unreadable)."""
    try:
        with image_io.open_regular(path) as f:
            digest = hashlib.sha256()
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
            return digest.hexdigest()
    except OSError:
        return None


def locate(what: str, name: str | None, given: str | None, digest: str | None,
           png: Path) -> str | None:
    """The file to replay with: `given` (a path the user chose), else the bare
    `name` beside `png` or in the working directory; its sha256 must be `digest`."""
    if name is None:
        if given:
            raise UserError(f"cannot replay: the dream had no {what} file, but one was given")
        return None
    if digest is None:
        raise UserError(f"cannot replay: {png}: the record names a {what} without its sha256")
    if given:
        actual = sha256_of(given)
        if actual is None:
            raise UserError(f"cannot replay: {what} {given}: not a readable file")
        if actual != digest:
            raise UserError(f"cannot replay: {what} {given} is not the file the dream was "
                            f"made from (sha256 differs: changed, or another file)")
        return str(given)
    if not record.is_bare_name(name):
        raise UserError(f"cannot replay: {png}: recorded {what} name {name!r} is not a bare "
                        f"file name")
    folders = [png.parent, Path(".")]
    if same_file(*folders):
        folders = folders[:1]
    for folder in folders:
        if sha256_of(folder / name) == digest:
            return str(folder / name)
    raise UserError(f"cannot replay: no {what} {name!r} with the recorded sha256 beside "
                    f"{png.name} or in the working directory (missing, or changed since); "
                    f"pass --{what}=FILE")

