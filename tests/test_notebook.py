"""examples/exercise2.ipynb runs from top to bottom, offline on digits, in under 2 minutes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the dev extra's nbformat runs the notebook")
nbclient = pytest.importorskip("nbclient", reason="the dev extra's nbclient runs the notebook")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "exercise2.ipynb"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_notebook_runs_offline_on_digits(tmp_path, monkeypatch):
    monkeypatch.setenv("FCNET_DATA", str(tmp_path / "data"))  # the kernel inherits these
    path = [SRC, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))  # this checkout's fcnet
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=110, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.monotonic()
    client.execute()  # a failing cell (the notebook asserts its numbers) raises here
    seconds = time.monotonic() - t0
    assert seconds < 120, f"the notebook took {seconds:.0f} s"

    def outputs(marker: str) -> list:
        cell = next(c for c in nb.cells if c.cell_type == "code" and marker in c.source)
        return cell.outputs

    def images(marker: str) -> int:
        return sum("image/png" in o.get("data", {}) for o in outputs(marker))

    def text(marker: str) -> str:
        return "".join(o.get("text", "") for o in outputs(marker))

    assert "max relative error" in text("eval_numerical_gradient")
    assert images("toy_training()") == 1
    assert images('"weights.png"') == 3  # loss, accuracies, first-layer weights
    assert (tmp_path / "runs" / "digits" / "tb").is_dir()  # the run's TensorBoard events
    assert "best:" in text("GridSearchCV(")
    assert images("optuna_plots") == 3
    assert "8 trials" in text("optuna_plots")
