"""Batch inputs as a stream: a folder, a glob or a list file of any length.

A list file (any existing file whose suffix is not an image's) holds one path
a line, relative to the list file's folder; blank lines and lines starting
with '#' are ignored. It is read line by line, never whole. A folder or glob is
listed once and sorted (names only: ~100 bytes an image), so the order, and
with it each process's share of a multi-process job, never depends on timing.

Output names are the input's stem (`photo.jpg` -> `photo.png`). In a folder or
glob, inputs whose stems collide keep their whole name (`photo.jpg.png`); in a
list file, a later input whose name is already taken takes its whole name, and
fails if that is taken too: names are remembered as the stream goes (a set of
output names, the only thing that grows with the list).
"""
from __future__ import annotations

import dataclasses
import glob
import os
from collections import Counter
from pathlib import Path
from typing import Iterator

from dream_jax.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One input and its outputs, one per objective; `error` when it cannot have any."""
    index: int  # position in the stream: what decides which process dreams it
    input: Path
    outputs: tuple[tuple[str, Path], ...] = ()  # (objective text, output path)
    error: str | None = None


def is_list_file(spec: str) -> bool:
    path = Path(spec)
    return path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES


def _listed(spec: str) -> list[Path]:
    """A folder's image files or a glob's files, sorted."""
    if Path(spec).is_dir():
        with os.scandir(spec) as scan:
            names = sorted(e.name for e in scan
                           if Path(e.name).suffix.lower() in IMAGE_SUFFIXES and e.is_file())
        return [Path(spec) / name for name in names]
    return sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())


def _lines(list_file: Path) -> Iterator[Path]:
    base = list_file.parent
    try:
        with open(list_file, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield base / line
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{list_file}: cannot read the list of inputs ({e})") from None


def count(spec: str) -> int:
    """How many inputs `spec` names (a list file is read once more, line by line);
    none is an error."""
    found = sum(1 for _ in _lines(Path(spec))) if is_list_file(spec) else len(_listed(spec))
    if not found:
        raise UserError(f"no input images match {spec}")
    return found


def entries(spec: str, objective_texts: list[str], output_dir: Path) -> Iterator[Entry]:
    """Every input of `spec` with its output paths, in a fixed order."""
    suffixes = ([f"__obj{k}" for k in range(len(objective_texts))]
                if len(objective_texts) > 1 else [""])

    def entry(index: int, path: Path, name: str) -> Entry:
        return Entry(index, path, tuple((text, output_dir / f"{name}{suffix}.png")
                                        for text, suffix in zip(objective_texts, suffixes)))

    if is_list_file(spec):
        taken: set[str] = set()
        for index, path in enumerate(_lines(Path(spec))):
            name = next((n for n in (path.stem, path.name) if n not in taken), None)
            if name is None:
                yield Entry(index, path, error=f"output name {path.stem}.png (and {path.name}.png)"
                                               f" already taken by an earlier input of the list")
                continue
            taken.add(name)
            yield entry(index, path, name)
    else:
        paths = _listed(spec)
        stems = Counter(path.stem for path in paths)
        for index, path in enumerate(paths):
            yield entry(index, path, path.stem if stems[path.stem] == 1 else path.name)
