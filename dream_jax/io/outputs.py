"""Where an output may go, checked before any work: an existing, writable
folder, a name and path the file system takes, and never one of the inputs."""
from __future__ import annotations

import os
from pathlib import Path

from dream_jax.io import atomic
from dream_jax.errors import UserError


def check_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """An existing folder where a file can really be created (root passes
    `os.access` even where writes fail, e.g. /sys or a read-only mount: so try)."""
    folder = Path(folder)
    try:
        exists, is_dir = folder.exists(), folder.is_dir()
    except OSError as e:  # e.g. a path too long
        raise UserError(f"{what} {folder}: {e.strerror or e}") from None
    if not exists:
        raise UserError(f"{what} {folder} does not exist")
    if not is_dir:
        raise UserError(f"{what} {folder} is a file, not a folder")
    try:
        atomic.probe(folder)
    except OSError as e:
        raise UserError(f"{what} {folder} is not writable ({e.strerror or e})") from None
    return folder


def check_output(path: str | os.PathLike, inputs: tuple = ()) -> Path:
    """A .png path in an existing, writable folder, with a name the file system
    takes, that is none of `inputs` (the same file by inode, whatever the
    spelling): checked before the work starts."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"{path}: output must be a .png file")
    folder = path.parent if str(path.parent) else Path(".")
    check_path_length(path, folder)
    if path.is_dir():
        raise UserError(f"{path}: is a directory")
    try:
        check_folder(folder)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    for other in inputs:
        if same_file(path, other):
            raise UserError(f"{path}: is the input {other}; refusing to overwrite it "
                            f"(choose another output)")
    return path


def check_path_length(path: Path, folder: Path) -> None:
    """Refuse a name or path longer than the file system takes, before any work."""
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
        path_max = os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    if len(os.fsencode(path.name)) > name_max:
        raise UserError(f"{str(path)[:80]}...: file name over {name_max} bytes")
    if len(os.fsencode(os.path.abspath(path))) >= path_max:
        raise UserError(f"{str(path)[:80]}...: path over {path_max} bytes")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one existing file (device and inode)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False
