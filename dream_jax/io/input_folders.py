"""Batch inputs as a stream: a folder, a glob or a list file of any length.

A list file (any existing file whose suffix is not an image's) holds one path
a line, relative to the list file's folder; blank lines and lines starting
with '#' are ignored. It is read line by line, never whole. A folder or glob is
listed once and sorted (names only: ~100 bytes an image), so the order, and
with it each process's share of a multi-process job, never depends on timing.

Output names are the input's stem (`photo.jpg` -> `photo.png`). In a folder or
glob, an input keeps its whole name (`photo.jpg.png`) when its stem is another
input's stem or another input's whole name (`a.png` beside `a.png.png`), which
makes names unique within one folder; in a list file, a later input whose name
is already taken takes its whole name. Names are remembered as the stream goes
(a set of output names, the only thing that grows with the list); an input
whose names are both taken (same-named files in two folders) is an error entry,
listed in the summary, never an overwrite. So is an input that is its own output.
"""
from __future__ import annotations

import dataclasses
import glob
import os
from collections import Counter
from pathlib import Path
from typing import Iterator

from dream_jax.errors import UserError
from dream_jax.io.outputs import same_file

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


def check_output_dir(spec: str, output_dir: Path) -> None:
    """Refuse a folder or glob with an input in `output_dir`: outputs would be
    taken as inputs (or be the inputs) on the next run."""
    if is_list_file(spec):
        return
    folders = {path.parent for path in _listed(spec)} if not Path(spec).is_dir() else {Path(spec)}
    if any(same_file(folder, output_dir) for folder in folders):
        raise UserError(f"output folder {output_dir} is the input folder: outputs would be "
                        f"taken as inputs on the next run; choose another --output_dir")


def _names(paths: list[Path]) -> list[str]:
    """Each path's output name (before `.png`): its stem, unless that is another
    path's stem or whole name; then its whole name."""
    stems = Counter(path.stem for path in paths)
    whole = Counter(path.name for path in paths)
    return [path.stem if stems[path.stem] == 1 and whole[path.stem] == (path.stem == path.name)
            else path.name for path in paths]


def entries(spec: str, objective_texts: list[str], output_dir: Path) -> Iterator[Entry]:
    """Every input of `spec` with its output paths, in a fixed order."""
    suffixes = ([f"__obj{k}" for k in range(len(objective_texts))]
                if len(objective_texts) > 1 else [""])
    taken: dict[str, Path] = {}

    def entry(index: int, path: Path, choices: tuple[str, ...]) -> Entry:
        name = next((n for n in choices if n not in taken), None)
        if name is None:
            return Entry(index, path, error=f"output name {choices[-1]}.png already taken by "
                                            f"{taken[choices[-1]]}")
        taken[name] = path
        outputs = tuple((text, output_dir / f"{name}{suffix}.png")
                        for text, suffix in zip(objective_texts, suffixes))
        if any(same_file(path, output) for _, output in outputs):
            return Entry(index, path, error=f"{path} would be its own output; "
                                            f"choose another --output_dir")
        return Entry(index, path, outputs)

    if is_list_file(spec):
        for index, path in enumerate(_lines(Path(spec))):
            yield entry(index, path, (path.stem, path.name))
    else:
        paths = _listed(spec)
        for index, (path, name) in enumerate(zip(paths, _names(paths))):
            yield entry(index, path, (name,))
