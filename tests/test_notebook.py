"""The worked notebook, examples/quickstart.ipynb, runs end to end on the
synthetic set (its quick settings) and leaves what each step promises."""

from __future__ import annotations

import csv
import shutil
import tempfile
import zipfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_the_notebook_is_kept_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_the_notebook_runs_end_to_end(tmp_path, monkeypatch):
    # The kernel inherits the environment: quick settings, and Ray's files in this test's folder.
    monkeypatch.setenv("NUCJAX_NOTEBOOK_QUICK", "1")
    # Ray's socket paths may not pass 107 bytes: pytest's folders are too deep for its temp dir.
    ray_tmp = Path(tempfile.mkdtemp(prefix="nucjax-ray-"))
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    printed = "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "nuclei found" in printed
    pictures = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs
                if "image/png" in out.get("data", {})]
    assert len(pictures) >= 2  # the data, and the segmentation
    assert (tmp_path / "runs" / "quickstart-train" / "checkpoints").is_dir()
    with open(tmp_path / "runs" / "quickstart-search" / "results.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    assert (tmp_path / "runs" / "quickstart-search" / "report.html").is_file()
    assert "rdf.yaml" in zipfile.ZipFile(tmp_path / "quickstart.zip").namelist()
