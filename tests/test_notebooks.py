"""The notebooks: committed without outputs, and every cell runs (at the reduced sizes
of DREAM_JAX_NOTEBOOK_FAST=1, on the converted weights) in a kernel of this interpreter."""
import json
import sys
from pathlib import Path

import nbformat
import pytest

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
STRIP = ROOT / "scripts" / "strip_notebooks.py"


def _strip_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("strip_notebooks", STRIP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == ["quickstart.ipynb", "research.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name} has outputs: run `make strip-notebooks`")
    assert _strip_module().main(["--check", str(path)]) == 0, "run `make strip-notebooks`"


def test_strip_removes_outputs_and_counts(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# title"),
        nbformat.v4.new_code_cell("print(1)", execution_count=3, outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="1\n")],
            metadata={"execution": {"iopub.status.idle": "2026-12-01T10:00:00Z"}})])
    path = tmp_path / "ran.ipynb"
    nbformat.write(notebook, path)
    strip = _strip_module()
    assert strip.main(["--check", str(path)]) == 1  # reported, not changed
    assert nbformat.read(path, as_version=4).cells[1].outputs
    assert strip.main([str(path)]) == 0
    cell = nbformat.read(path, as_version=4).cells[1]
    assert (cell.outputs, cell.execution_count, dict(cell.metadata)) == ([], None, {})
    assert cell.source == "print(1)"
    assert strip.main(["--check", str(path)]) == 0


def _kernel_of_this_interpreter(folder: Path) -> str:
    """A kernelspec running this interpreter (the venv's), found first on JUPYTER_PATH."""
    spec = folder / "kernels" / "dream_jax_test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "dream_jax test", "language": "python"}))
    return "dream_jax_test"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_the_weights(path, weights_dir, tmp_path, monkeypatch):
    from nbclient import NotebookClient
    for name, folder in [("JUPYTER_PATH", "jupyter"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                         ("IPYTHONDIR", "ipython")]:  # nothing from or into the user's own
        monkeypatch.setenv(name, str(tmp_path / folder))
    kernel = _kernel_of_this_interpreter(tmp_path / "jupyter")
    monkeypatch.setenv("DREAM_JAX_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("DREAM_JAX_WEIGHTS", str(weights_dir))
    monkeypatch.setenv("DREAM_JAX_NOTEBOOK_OUTPUT", str(tmp_path / "outputs"))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, kernel_name=kernel, timeout=900, allow_errors=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    # every figure the notebook shows was drawn (by the project's contact sheet)
    for cell in notebook.cells:
        shows = "show(" in cell.source or "display(Image" in cell.source
        if cell.cell_type == "code" and shows and "def show" not in cell.source:
            kinds = {k for out in cell.outputs for k in out.get("data", {})}
            assert "image/png" in kinds, f"no picture from:\n{cell.source}"
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not any(out.output_type == "error" for out in outputs)
