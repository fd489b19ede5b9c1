"""ppml-attest/1 against a real kernel through jupyter_client.

The test plays the browser with the reference client and routes its messages the way
the extension does: comm_open/comm_msg on the control channel, answers on IOPub. It
checks that a cell blocked in a secret request gets the secret, that an interrupt
still works, that getpass goes through the channel, and that the secret's bytes never
appear in any IOPub message.
"""

from __future__ import annotations

import contextlib
import json
import queue
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from ppml_kernel.channel.client import BrowserClient, verifier_for_root
from ppml_kernel.channel.protocol import TARGET_NAME
from ppml_kernel.tee.simulated import SimulatedPKI

pytestmark = pytest.mark.kernel
ROOT = Path(__file__).resolve().parents[1]


def start_kernel(spec_root: Path, env: dict[str, str] | None = None) -> tuple[Any, Any]:
    """The real PPML kernel (simulated enclave, its PKI in ``spec_root/pki``)."""
    spec_dir = spec_root / "ppml-channel-test"
    spec_dir.mkdir(parents=True, exist_ok=True)
    pki_dir = spec_root / "pki"
    SimulatedPKI.load_or_create(pki_dir)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ppml_kernel", "-f", "{connection_file}"],
                "display_name": "PPML channel test",
                "language": "python",
                "env": {"PPML_TEE": "simulated", "PPML_SIM_PKI_DIR": str(pki_dir), **(env or {})},
            }
        )
    )
    km = KernelManager(
        kernel_name="ppml-channel-test",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_root)]),
    )
    km.start_kernel()
    km.pki_dir = pki_dir
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory):
    km, kc = start_kernel(tmp_path_factory.mktemp("kernels"))
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


class Browser:
    """The extension's message routing, in Python."""

    def __init__(self, kc: Any, pki_dir: Path) -> None:
        self.kc = kc
        # The root this "browser" was told to trust (the user allowed this simulated PKI).
        self.trusted_root = SimulatedPKI.load(pki_dir).root_der
        self.comm_id = uuid.uuid4().hex
        self.client = BrowserClient()
        self.iopub: list[dict] = []
        self.unread: list[dict] = []  # channel messages seen but not consumed yet

    def control(self, msg_type: str, content: dict) -> None:
        self.kc.control_channel.send(self.kc.session.msg(msg_type, content))

    def send(self, data: dict) -> None:
        self.control("comm_msg", {"comm_id": self.comm_id, "data": data})

    def _record(self, msg: dict) -> None:
        self.iopub.append(msg)
        if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == self.comm_id:
            self.unread.append(msg["content"]["data"])

    def next_comm(self, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while not self.unread and time.monotonic() < deadline:
            try:
                self._record(self.kc.get_iopub_msg(timeout=0.5))
            except Exception:
                continue
        if not self.unread:
            raise AssertionError("no channel message from the kernel")
        return self.unread.pop(0)

    def connect(self) -> dict:
        self.control(
            "comm_open",
            {"comm_id": self.comm_id, "target_name": TARGET_NAME, "data": self.client.hello()},
        )
        evidence = self.next_comm()
        assert evidence["type"] == "evidence", evidence
        self.send(self.client.accept(evidence, verifier_for_root(self.trusted_root)))
        ready = self.client.open(self.next_comm())
        assert ready["type"] == "ready"
        return evidence

    def answer(self, request: dict, value: str) -> None:
        """Send ``value``, sealed, as the user's answer to a ``secret_request``."""
        self.send(
            self.client.seal(
                {
                    "type": "secret",
                    "request_id": request["request_id"],
                    "name": request["name"],
                    "value": value,
                }
            )
        )

    def drain(self, seconds: float = 0.5) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(queue.Empty):
                self._record(self.kc.get_iopub_msg(timeout=0.1))


def run_until_reply(kc: Any, msg_id: str, browser: Browser, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:  # skip stale kernel_info replies
            break
    browser.drain()
    return reply


def test_blocked_cell_receives_the_secret_over_control(kernel) -> None:
    km, kc = kernel
    browser = Browser(kc, km.pki_dir)
    evidence = browser.connect()
    assert evidence["tee"]["simulated"] is True
    code = (
        "from ppml_kernel.channel.jupyter import manager_of\n"
        "m = manager_of(get_ipython().kernel)\n"
        "v = m.request_secret('db_password', 'DB password', timeout=30)\n"
        "print('length', len(v), 'sum', sum(map(ord, v)))"
    )
    msg_id = kc.execute(code)
    request = browser.client.open(browser.next_comm())
    assert request["type"] == "secret_request" and request["name"] == "db_password"
    time.sleep(0.3)  # the cell is blocked now; the shell channel is not being read
    secret = "S3cr3t-Value-xyz"
    browser.answer(request, secret)
    assert browser.client.open(browser.next_comm())["ok"] is True
    reply = run_until_reply(kc, msg_id, browser)
    assert reply["content"]["status"] == "ok"
    out = "".join(m["content"].get("text", "") for m in browser.iopub if m["msg_type"] == "stream")
    assert f"length {len(secret)} sum {sum(map(ord, secret))}" in out
    wire = json.dumps([m["content"] for m in browser.iopub])
    assert secret not in wire


def test_interrupt_cancels_a_pending_secret_request(kernel) -> None:
    km, kc = kernel
    browser = Browser(kc, km.pki_dir)
    browser.connect()
    msg_id = kc.execute(
        "from ppml_kernel.channel.jupyter import manager_of\n"
        "manager_of(get_ipython().kernel).request_secret('never', timeout=600)"
    )
    assert browser.client.open(browser.next_comm())["type"] == "secret_request"
    start = time.monotonic()
    km.interrupt_kernel()
    reply = run_until_reply(kc, msg_id, browser, timeout=120)
    # The interrupt ended the wait, not the request's own (600 s) timeout; no tighter
    # bound, because a loaded 2-core CI machine may take seconds to deliver the signal.
    assert time.monotonic() - start < 120
    assert (
        reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    )
    cancel = browser.client.open(browser.next_comm())
    assert cancel == {
        "type": "secret_cancel",
        "request_id": cancel["request_id"],
        "reason": "the cell was interrupted",
    }
    # The kernel keeps working after the interrupt.
    msg_id = kc.execute("print(6 * 7)")
    assert run_until_reply(kc, msg_id, browser)["content"]["status"] == "ok"


def run_answering(
    kernel: tuple[Any, Any], code: str, name: str, prompt: str, value: str
) -> Browser:
    """Run ``code`` with a verified browser attached: it must ask for secret ``name`` with
    ``prompt``; the browser answers ``value``, and the cell must then succeed."""
    km, kc = kernel
    browser = Browser(kc, km.pki_dir)
    browser.connect()
    msg_id = kc.execute(code)
    request = browser.client.open(browser.next_comm())
    assert request["name"] == name and request["prompt"] == prompt
    browser.answer(request, value)
    reply = run_until_reply(kc, msg_id, browser)
    assert reply["content"]["status"] == "ok"
    return browser


def test_getpass_goes_through_the_channel(kernel) -> None:
    code = "import getpass\npw = getpass.getpass('Vault token: ')\nprint(len(pw))"
    browser = run_answering(kernel, code, "getpass", "Vault token: ", "tok-123")
    assert "tok-123" not in json.dumps([m["content"] for m in browser.iopub])


def test_unsolicited_secret_lands_in_the_store_and_bad_frames_are_rejected(kernel) -> None:
    km, kc = kernel
    browser = Browser(kc, km.pki_dir)
    browser.connect()
    sealed = browser.client.seal(
        {"type": "secret", "request_id": None, "name": "api_key", "value": "k-999"}
    )
    browser.send(sealed)
    assert browser.client.open(browser.next_comm())["ok"] is True
    browser.send(sealed)  # replay
    assert browser.next_comm() == {
        "type": "error",
        "code": "replay",
        "message": "frame 1 was already received (expected 2)",
        "seq": 1,
    }
    browser.send({"type": "sealed", "seq": 2, "ct": "!!"})
    assert browser.next_comm()["code"] == "malformed"
    msg_id = kc.execute(
        "import ppml_kernel.secrets as s\n"
        "print(s.names(), repr(s.secret('api_key')), len(s.get('api_key')))"
    )
    run_until_reply(kc, msg_id, browser)
    out = "".join(m["content"].get("text", "") for m in browser.iopub if m["msg_type"] == "stream")
    assert "['api_key'] Secret(name='api_key', value=<hidden>, source='browser') 5" in out


def test_foreign_control_comms_are_ignored(kernel) -> None:
    km, kc = kernel
    browser = Browser(kc, km.pki_dir)
    browser.control("comm_open", {"comm_id": "x", "target_name": "jupyter.widget", "data": {}})
    browser.control("comm_msg", {"comm_id": "not-a-session", "data": {"type": "sealed"}})
    msg_id = kc.execute("print('alive')")
    assert run_until_reply(kc, msg_id, browser)["content"]["status"] == "ok"


def stream_text(browser: Browser) -> str:
    """Everything the kernel printed or displayed as text (streams and text/plain)."""
    parts = []
    for m in browser.iopub:
        if m["msg_type"] == "stream":
            parts.append(m["content"].get("text", ""))
        elif m["msg_type"] in ("display_data", "execute_result"):
            parts.append(m["content"]["data"].get("text/plain", ""))
    return "".join(parts)


def displayed(browser: Browser) -> str:
    """The content of every display_data and execute_result message, as JSON."""
    return json.dumps(
        [m["content"] for m in browser.iopub if m["msg_type"] in ("execute_result", "display_data")]
    )


def test_ppml_secret_magic_without_a_browser_says_why(tmp_path: Path) -> None:
    km, kc = start_kernel(tmp_path)
    try:
        browser = Browser(kc, km.pki_dir)
        msg_id = kc.execute("%ppml secret db_password")
        reply = run_until_reply(kc, msg_id, browser)
        assert reply["content"]["status"] == "ok"  # a clear message, not a traceback
        err = stream_text(browser)
        assert "ppml: no browser has verified this kernel's enclave" in err
        assert "jupyterlab-ppml" in err and "Traceback" not in err
        msg_id = kc.execute("%ppml secret 'bad name!'")
        run_until_reply(kc, msg_id, browser)
        assert "must be a name" in stream_text(browser)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_ppml_secret_magic_end_to_end(kernel) -> None:
    _, kc = kernel
    browser = run_answering(
        kernel,
        "%ppml secret warehouse_key --prompt 'Key for the warehouse'",
        "warehouse_key",
        "Key for the warehouse",
        "wk-0001",
    )
    shown = displayed(browser)
    assert "Secret 'warehouse_key' arrived end-to-end encrypted" in shown
    assert "SIMULATED SGX enclave session" in shown
    msg_id = kc.execute("%ppml secrets")
    run_until_reply(kc, msg_id, browser)
    assert "warehouse_key" in displayed(browser)
    assert "wk-0001" not in json.dumps([m["content"] for m in browser.iopub])
    # Nothing secret in IPython's history either: only the name was typed.
    msg_id = kc.history(hist_access_type="tail", n=10)
    hist = kc.get_shell_msg(timeout=10)
    assert hist["parent_header"]["msg_id"] == msg_id and hist["content"]["status"] == "ok"
    assert "secret warehouse_key" in json.dumps(hist["content"])  # the magic line is there
    assert "wk-0001" not in json.dumps(hist["content"])
