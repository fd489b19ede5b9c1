"""Every teaching notebook runs top to bottom, sealed, through ``ppml-kernel run``.

The headless sealed client attests the simulated enclave (allowed explicitly), proves an
owner key and executes each cell sealed; secrets the notebooks ask for come from
environment variables named on the command line. The executed notebooks can be written
with their outputs sealed at rest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from ppml_kernel.channel import atrest

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
PPML = [sys.executable, "-m", "ppml_kernel.cli"]
# What the secrets notebook asks for: the owner "types" them through the sealed client.
SECRETS = {"db_password": "nb-db-pw-31337", "getpass": "nb-vault-token-4242"}

pytestmark = pytest.mark.kernel

SPARK_NOISE = ("Using incubator modules", "log4j", "NativeCodeLoader", "hostname", " WARN ",
               "Traceback", "UserWarning", "SLF4J", "Setting default log level")


@pytest.fixture(scope="module")
def ppml_kernelspec(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("nb-prefix")
    subprocess.run([*PPML, "install", "--prefix", str(prefix)], check=True, capture_output=True)
    return prefix / "share" / "jupyter"


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def run_notebook(path: Path, out: Path, spec: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JUPYTER_PATH": str(spec)}
    env.update({f"NB_SECRET_{k.upper()}": v for k, v in SECRETS.items()})
    secrets = [f"--secret={k}=NB_SECRET_{k.upper()}" for k in SECRETS]
    return subprocess.run(
        [*PPML, "run", str(path), "-o", str(out), "--allow-simulated", *secrets, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_there_are_notebooks():
    assert any(p.name.startswith("01-") for p in notebook_paths())


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom_sealed(path, ppml_kernelspec, tmp_path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "ppml"
    out = tmp_path / path.name
    proc = run_notebook(path, out, ppml_kernelspec)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SIMULATED" in proc.stderr  # the run says what it ran on
    done = nbformat.read(out, as_version=4)
    texts = []
    for cell in done.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", (
                f"{path.name}: {output.get('ename')}: {output.get('evalue')}"
            )
            texts.append(str(output.get("text", "")) + str(output.get("data", {})))
    joined = "\n".join(texts)
    assert "ppml:" not in joined, "a %ppml magic reported an error"
    # no Spark noise in cells: the JVM's start-up notes, log4j, Spark's task failures and
    # Python worker tracebacks go to the kernel's Spark log file (%ppml spark logs)
    stderr = "\n".join(output.get("text", "") for cell in done.cells
                       for output in cell.get("outputs", [])
                       if output.output_type == "stream" and output.get("name") == "stderr")
    for noise in SPARK_NOISE:
        assert noise not in stderr, f"{path.name}: {noise!r} in a cell:\n{stderr[:3000]}"
    assert "Traceback" not in joined
    for value in SECRETS.values():
        assert value not in out.read_text(), "a secret reached the executed notebook"
    if path.name.startswith("01-"):
        assert "SIMULATED" in joined and "PASSED" in joined and "FAILED" in joined
    if path.name.startswith("02-"):
        assert "<hidden>" in joined and "derived a 256 bit key" in joined
        assert f"got a token of {len(SECRETS['getpass'])} characters" in joined


def test_run_refuses_a_simulated_enclave_unless_allowed(ppml_kernelspec, tmp_path):
    path = NOTEBOOKS / "01-attestation.ipynb"
    env = {**os.environ, "JUPYTER_PATH": str(ppml_kernelspec)}
    proc = subprocess.run(
        [*PPML, "run", str(path), "-o", str(tmp_path / "x.ipynb")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3
    assert "SIMULATED" in proc.stderr and "does not allow simulation" in proc.stderr
    assert not (tmp_path / "x.ipynb").exists()


def test_outputs_sealed_at_rest_open_only_with_the_key(ppml_kernelspec, tmp_path):
    path = NOTEBOOKS / "02-secrets.ipynb"
    out, key_file = tmp_path / "sealed.ipynb", tmp_path / "nb.key"
    proc = run_notebook(
        path,
        out,
        ppml_kernelspec,
        "--outputs",
        "sealed",
        f"--seal-key={key_file}",
        "--seal-sources",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert key_file.stat().st_mode & 0o777 == 0o600
    text = out.read_text()
    for needle in ("derived a 256 bit key", "pbkdf2_hmac", "got a token"):
        assert needle not in text  # outputs and sources are sealed in the file
    assert atrest.PLACEHOLDER in text
    nb = json.loads(text)
    opened = atrest.open_notebook(json.loads(text), key_file.read_bytes())
    joined = json.dumps(opened)
    assert "derived a 256 bit key" in joined and "pbkdf2_hmac" in joined
    with pytest.raises(atrest.SealedNotebookError, match="another key"):
        atrest.open_notebook(json.loads(text), os.urandom(32))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    sealed = code[1]["outputs"][0]["data"][atrest.MIME]
    sealed["ct"] = sealed["ct"][:-4] + ("AAAA" if not sealed["ct"].endswith("AAAA") else "BBBB")
    with pytest.raises(atrest.SealedNotebookError, match=f"cell {code[1]['id']}: .*modified"):
        atrest.open_notebook(nb, key_file.read_bytes())
    # Moving a sealed output to another cell fails too (the cell id is bound).
    nb2 = json.loads(text)
    code2 = [c for c in nb2["cells"] if c["cell_type"] == "code"]
    code2[0]["outputs"], code2[1]["outputs"] = code2[1]["outputs"], code2[0]["outputs"]
    with pytest.raises(atrest.SealedNotebookError):
        atrest.open_notebook(nb2, key_file.read_bytes())
