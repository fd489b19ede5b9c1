"""The PPML kernel end to end through jupyter_client: install, start, run, interrupt,
restart, shut down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.kernel_client import execute

pytestmark = pytest.mark.kernel


@pytest.fixture
def kernelspec_prefix(tmp_path, monkeypatch):
    prefix = tmp_path / "prefix"
    out = subprocess.run(
        [sys.executable, "-m", "ppml_kernel.cli", "install", "--prefix", str(prefix)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Python 3 (PPML, simulated enclave)" in out.stdout
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    return prefix


@pytest.fixture
def kernel(kernelspec_prefix):
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="ppml")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    yield km, kc
    kc.stop_channels()
    if km.is_alive():
        km.shutdown_kernel(now=True)


def test_kernelspec_written(kernelspec_prefix):
    spec = json.loads((kernelspec_prefix / "share/jupyter/kernels/ppml/kernel.json").read_text())
    assert spec["argv"][1:] == ["-m", "ppml_kernel", "-f", "{connection_file}"]
    assert spec["env"]["PPML_TEE"] == "simulated"
    assert spec["metadata"]["ppml"]["tee"] == "simulated"
    assert Path(spec["argv"][0]).exists()


def test_kernel_info_names_ppml(kernel):
    _, kc = kernel
    msg_id = kc.kernel_info()
    reply = kc.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=30)
    content = reply["content"]
    assert content["implementation"] == "ppml"
    assert content["language_info"]["name"] == "python"
    assert content["ppml"]["protocol_version"] == "ppml-attest/2"
    assert content["ppml"]["tee"] == "simulated" and content["ppml"]["simulated"] is True
    assert "SIMULATED" in content["banner"]


def test_plain_python_and_ppml_status(kernel):
    _, kc = kernel
    assert execute(kc, "1+1").result() == "2"
    assert execute(kc, "import sys; 'pyspark' in sys.modules").result() == "False"
    status = execute(kc, "%ppml status")
    assert status.status == "ok"
    text = status.text()
    assert "SIMULATED" in text and "PASSED" in text
    assert "MRENCLAVE" in text and "simulated" in text
    assert "browser sessions" in text and "none yet" in text
    assert "<table" in text  # HTML report for notebooks
    attest = execute(kc, "%ppml attest --nonce 00112233")
    assert "PASSED" in attest.text() and "report_data" in attest.text()
    # no JVM was started by any of this
    assert execute(kc, "import sys; 'pyspark' in sys.modules").result() == "False"


def test_bad_magic_input_is_an_error_line_not_a_traceback(kernel):
    _, kc = kernel
    for line in (
        "%ppml frobnicate",
        "%ppml attest --nonce zz",
        "%ppml attest --bogus",
        "%ppml status 'x",
    ):
        run = execute(kc, line)
        assert run.status == "ok", line
        assert "ppml:" in run.text() and "Traceback" not in run.text(), line
    help_ = execute(kc, "%ppml help")
    assert "<table" in help_.text() and "%ppml attest" in help_.text()
    assert execute(kc, "40+2").result() == "42"


def test_interrupt_restart_shutdown(kernel):
    km, kc = kernel
    msg_id = kc.execute(
        "import time\nprint('started', flush=True)\nfor _ in range(600): time.sleep(0.1)"
    )
    while True:  # interrupt only once the cell is really running (machines are loaded)
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            break
    time.sleep(0.3)
    km.interrupt_kernel()
    while True:
        reply = kc.get_shell_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert execute(kc, "x = 5; x").result() == "5"

    pid = km.provisioner.pid
    km.restart_kernel(now=False)
    kc.wait_for_ready(timeout=60)
    assert km.provisioner.pid != pid
    assert "NameError" in execute(kc, "x").text()
    assert "PASSED" in execute(kc, "%ppml status").text()

    new_pid = km.provisioner.pid
    km.shutdown_kernel()
    assert not km.is_alive()
    with pytest.raises(ProcessLookupError):
        os.kill(new_pid, 0)


def test_curve_encrypted_wire_when_manager_asks(kernelspec_prefix):
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="ppml", transport_encryption="auto")
    km.start_kernel()
    try:
        assert km.get_connection_info().get("curve_publickey")
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        assert execute(kc, "6*7").result() == "42"
        kc.stop_channels()
    finally:
        km.shutdown_kernel(now=True)
