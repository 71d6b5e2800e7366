"""The walkthrough notebook runs top to bottom (QUICK settings) and is stored without outputs."""

import ast
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "slimming_walkthrough.ipynb"


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") and cell.get("execution_count") is None
               for cell in notebook.cells if cell.cell_type == "code")


@pytest.mark.slow
def test_notebook_runs(tmp_path, monkeypatch, synthetic_cache):
    monkeypatch.setenv("YOLO_SLIM_CACHE", synthetic_cache)
    monkeypatch.setenv("YOLO_SLIM_NOTEBOOK_QUICK", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    result = next(o for o in notebook.cells[-1]["outputs"] if o["output_type"] == "execute_result")
    points = ast.literal_eval(result["data"]["text/plain"])  # [(ratio, GFLOPs, mAP), ...]
    assert [ratio for ratio, _, _ in points] == [0.2, 0.4, 0.6, 0.8]
    gflops = [g for _, g, _ in points]
    assert gflops == sorted(gflops, reverse=True) and all(0 <= m <= 1 for _, _, m in points)
    assert any(output.get("output_type") == "display_data" for cell in notebook.cells for output in cell.get("outputs", []))
