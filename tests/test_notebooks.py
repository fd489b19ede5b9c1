"""Every teaching notebook runs top to bottom on the PPML kernel (simulated enclave)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
# Notebooks that need a person at a browser (a secret typed into the extension's dialog):
# tests/test_extension.py::test_end_to_end_in_chromium runs the same steps in Chromium, and
# tests/test_channel_kernel.py runs them with a scripted browser.
BROWSER_ONLY: set[str] = {"02-secrets.ipynb"}

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def ppml_kernelspec(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("nb-prefix")
    subprocess.run(
        [sys.executable, "-m", "ppml_kernel.cli", "install", "--prefix", str(prefix)],
        check=True,
        capture_output=True,
    )
    return prefix / "share" / "jupyter"


def notebook_paths() -> list[Path]:
    return sorted(p for p in NOTEBOOKS.glob("*.ipynb") if p.name not in BROWSER_ONLY)


def test_there_are_notebooks():
    assert any(p.name.startswith("01-") for p in notebook_paths())


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, ppml_kernelspec, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(ppml_kernelspec))
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "ppml"
    client = NotebookClient(
        nb, timeout=600, kernel_name="ppml", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", (
                f"{path.name}: {out.get('ename')}: {out.get('evalue')}"
            )
            texts.append(str(out.get("text", "")) + str(out.get("data", {})))
    joined = "\n".join(texts)
    assert "ppml:" not in joined, "a %ppml magic reported an error"
    # no warnings or logs in cells: the JVM's start-up notes, log4j, Spark's task failures
    # and Python worker tracebacks go to the kernel's Spark log file (%ppml spark logs)
    stderr = [f"cell {i}: {out.get('text', '')[:300]}" for i, cell in enumerate(nb.cells)
              for out in cell.get("outputs", [])
              if out.output_type == "stream" and out.get("name") == "stderr"]
    assert not stderr, f"{path.name}: stderr in cell output:\n" + "\n".join(stderr)
    assert "Traceback" not in joined
    if path.name.startswith("01-"):
        assert "SIMULATED" in joined and "PASSED" in joined and "FAILED" in joined
