"""An idle PPML kernel has not loaded the channel's cryptography; the first handshake does.

Real kernels through jupyter_client; the browser is the reference client, routed the
way the extension routes it (see tests/test_channel_kernel.py).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from test_channel_kernel import Browser, run_until_reply, start_kernel, stream_text

pytestmark = pytest.mark.kernel
ROOT = Path(__file__).resolve().parents[1]

# What kernel start used to import eagerly, and what must stay out of an idle kernel.
HEAVY = (
    "cryptography.hazmat.primitives.ciphers.aead",
    "cryptography.hazmat.primitives.asymmetric.ec",
    "ppml_kernel.channel.crypto",
    "ppml_kernel.channel.session",
    "ppml_kernel.attestation.verifier",
    "ppml_kernel.tee.simulated",
    "dcap_qvl",
    "pyspark",
)
PROBE = f"import sys, json\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"


def loaded(kc, browser: Browser) -> dict[str, bool]:
    """Which of HEAVY the kernel has imported (the probe prints one JSON line)."""
    browser.iopub.clear()
    msg_id = kc.execute(PROBE)
    assert run_until_reply(kc, msg_id, browser)["content"]["status"] == "ok"
    # Only this probe's output, complete: on a loaded machine an earlier cell's stream
    # can arrive late, and this one's after the reply.
    deadline = time.monotonic() + 30
    while not any(
        mine(m, msg_id) and m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
        for m in browser.iopub
    ):
        assert time.monotonic() < deadline, "the probe cell never went idle"
        browser.drain(0.2)
    text = "".join(
        m["content"]["text"] for m in browser.iopub if mine(m, msg_id) and m["msg_type"] == "stream"
    )
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def mine(msg: dict, msg_id: str) -> bool:
    return msg["parent_header"].get("msg_id") == msg_id


@pytest.fixture
def kernel(tmp_path: Path):
    km, kc = start_kernel(tmp_path)
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def test_idle_kernel_has_not_imported_the_channel_crypto(kernel) -> None:
    km, kc = kernel
    browser = Browser(kc, km.pki_dir)
    assert loaded(kc, browser) == dict.fromkeys(HEAVY, False)
    # Foreign comms on the control channel do not load it either.
    browser.control("comm_open", {"comm_id": "w", "target_name": "jupyter.widget", "data": {}})
    browser.control("comm_msg", {"comm_id": "not-a-session", "data": {"type": "sealed"}})
    assert not loaded(kc, browser)["ppml_kernel.channel.crypto"]


def test_first_handshake_loads_it_and_the_channel_works(kernel) -> None:
    km, kc = kernel
    browser = Browser(kc, km.pki_dir)
    evidence = browser.connect()  # verified with attestation.Verifier, bound, ready
    assert evidence["tee"]["simulated"] is True
    now = loaded(kc, browser)
    assert now["ppml_kernel.channel.session"] and now["cryptography.hazmat.primitives.ciphers.aead"]
    assert not now["pyspark"]
    browser.send(
        browser.client.seal({"type": "secret", "request_id": None, "name": "k", "value": "v-42"})
    )
    assert browser.client.open(browser.next_comm())["ok"] is True
    msg_id = kc.execute("import ppml_kernel.secrets as s\nprint(s.names(), len(s.get('k')))")
    run_until_reply(kc, msg_id, browser)
    assert "['k'] 4" in stream_text(browser)
    # A second browser reuses the loaded machinery.
    Browser(kc, km.pki_dir).connect()


def test_a_broken_crypto_import_is_reported_cleanly(tmp_path: Path) -> None:
    """If the lazy import fails, the browser gets one clear error and the kernel lives on."""
    fake = tmp_path / "fake"
    (fake / "cryptography").mkdir(parents=True)
    (fake / "cryptography" / "__init__.py").write_text(
        "raise ImportError('cryptography is deliberately broken in this test')\n"
    )
    path = os.pathsep.join([str(fake), str(ROOT), os.environ.get("PYTHONPATH", "")])
    km, kc = start_kernel(tmp_path / "kernels", env={"PYTHONPATH": path})
    try:
        browser = Browser(kc, km.pki_dir)
        browser.control(
            "comm_open",
            {
                "comm_id": browser.comm_id,
                "target_name": "ppml.attest/1",
                "data": browser.client.hello(),
            },
        )
        error = browser.next_comm()
        assert error["type"] == "error" and error["code"] == "attester", error
        assert "cannot load its channel crypto" in error["message"]
        assert "deliberately broken" in error["message"] and "Traceback" not in error["message"]
        msg_id = kc.execute("%ppml secret db_password")
        assert run_until_reply(kc, msg_id, browser)["content"]["status"] == "ok"
        shown = stream_text(browser)
        assert "no browser has verified this kernel's enclave" in shown
        assert "Traceback" not in shown
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
