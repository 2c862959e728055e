"""The package's layers, read from its imports: `io` is the floor (it imports no
other part of dream_jax), and the workbench and the scale-out jobs are the top
(nothing else imports them), so the visualiser and the core stand without them."""
from pathlib import Path

import pytest

from tests.conftest import imported_names

PACKAGE = Path(__file__).resolve().parents[1] / "dream_jax"
FLOOR_MAY_IMPORT = {"errors", "__version__", "io"}


def imported_parts(path: Path) -> set[str]:
    """The parts of dream_jax (its first-level modules and packages) `path` imports."""
    return {name.split(".")[1] for _, name in imported_names(path.read_text())
            if name.startswith("dream_jax.")}


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_the_scan_reads_both_import_forms(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import dream_jax.io.atomic\nfrom dream_jax.workbench import site\n"
                      "from dream_jax import errors\nimport numpy\n")
    assert imported_parts(source) == {"io", "workbench", "errors"}


def test_io_imports_no_other_layer():
    files = sorted((PACKAGE / "io").rglob("*.py"))
    assert len(files) > 5
    offenders = {p.name: sorted(imported_parts(p) - FLOOR_MAY_IMPORT) for p in files}
    assert not {k: v for k, v in offenders.items() if v}


@pytest.mark.parametrize("top", ["workbench", "scale"])
def test_nothing_below_the_top_imports_it(top):
    files = [p for p in sorted(PACKAGE.rglob("*.py")) if part_of(p) != top]
    assert len(files) > 40
    offenders = [str(p.relative_to(PACKAGE)) for p in files if top in imported_parts(p)]
    assert not offenders, f"{top} is a top layer, imported by {offenders}"
