"""ppml-attest/2 against a real kernel through jupyter_client, as the owner's browser.

The owner side is the sealed headless client (the extension's message routing in
Python: comm_open/comm_msg on the control channel, answers on IOPub, every request
sealed). It checks that a cell blocked in a secret request gets the secret, that an
interrupt still works, that getpass goes through the channel, that `%ppml secret`
works end to end, and that the secret's bytes never appear in any message.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from support.sealed import owner_session, start_kernel, stop_kernel

from ppml_kernel.channel import crypto
from ppml_kernel.channel.sealed_client import LATER

pytestmark = pytest.mark.kernel
OWNER = crypto.generate_owner_key()  # the module's kernel is claimed by this key


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory):
    km, kc = start_kernel(tmp_path_factory.mktemp("kernels"))
    yield km, kc
    stop_kernel(km, kc)


def stream_text(result: Any) -> str:
    """Everything a request printed or displayed as text (streams and text/plain)."""
    parts = []
    for m in result.outputs:
        if m["msg_type"] == "stream":
            parts.append(m["content"].get("text", ""))
        elif m["msg_type"] in ("display_data", "execute_result"):
            parts.append(m["content"]["data"].get("text/plain", ""))
    return "".join(parts)


def test_blocked_cell_receives_the_secret_over_control(kernel) -> None:
    _, kc = kernel
    secret = "S3cr3t-Value-xyz"
    asked: list[tuple[str, str]] = []

    def provide(name: str, prompt: str) -> str:
        asked.append((name, prompt))
        time.sleep(0.3)  # the cell is blocked now; the shell channel is not being read
        return secret

    owner = owner_session(kc, OWNER, secret_provider=provide, record=True)
    assert owner.evidence["tee"]["simulated"] is True
    result = owner.execute(
        "from ppml_kernel.channel.jupyter import manager_of\n"
        "m = manager_of(get_ipython().kernel)\n"
        "v = m.request_secret('db_password', 'DB password', timeout=30)\n"
        "print('length', len(v), 'sum', sum(map(ord, v)))"
    )
    assert asked == [("db_password", "DB password")]
    assert result.status == "ok"
    assert f"length {len(secret)} sum {sum(map(ord, secret))}" in stream_text(result)
    results = [e for e in owner.channel_events if e["type"] == "secret_result"]
    assert results and results[-1]["ok"] is True and results[-1]["name"] == "db_password"
    assert secret not in "".join(owner.wire)
    assert "length" not in "".join(owner.wire)  # outputs are sealed on the wire too


def test_interrupt_cancels_a_pending_secret_request(kernel) -> None:
    km, kc = kernel
    owner = owner_session(kc, OWNER)
    before = len(owner.channel_events)
    msg_id = owner.submit(
        "execute_request",
        owner.execute_content(
            "from ppml_kernel.channel.jupyter import manager_of\n"
            "manager_of(get_ipython().kernel).request_secret('never', timeout=600)"
        ),
    )
    owner.secret_provider = lambda name, prompt: LATER  # the user has not answered yet
    start = time.monotonic()
    deadline = start + 60
    while not any(e["type"] == "secret_request" for e in owner.channel_events[before:]):
        assert time.monotonic() < deadline, "no secret_request"
        owner._handle_iopub(kc.get_iopub_msg(timeout=5))
    km.interrupt_kernel()
    result = owner.collect(msg_id, timeout=120)
    # The interrupt ended the wait, not the request's own (600 s) timeout.
    assert time.monotonic() - start < 120
    assert result.status == "error" and result.reply["content"]["ename"] == "KeyboardInterrupt"
    cancels = [e for e in owner.channel_events if e["type"] == "secret_cancel"]
    assert cancels and cancels[-1]["reason"] == "the cell was interrupted"
    assert owner.execute("print(6 * 7)").status == "ok"  # the kernel keeps working


def test_getpass_goes_through_the_channel(kernel) -> None:
    _, kc = kernel
    owner = owner_session(kc, OWNER, secret_provider=lambda n, p: "tok-123", record=True)
    result = owner.execute("import getpass\npw = getpass.getpass('Vault token: ')\nprint(len(pw))")
    assert result.status == "ok" and stream_text(result).strip() == "7"
    requests = [e for e in owner.channel_events if e["type"] == "secret_request"]
    assert requests[-1]["name"] == "getpass" and requests[-1]["prompt"] == "Vault token: "
    assert "tok-123" not in "".join(owner.wire)


def test_unsolicited_secret_lands_in_the_store_and_bad_frames_are_rejected(kernel) -> None:
    _, kc = kernel
    owner = owner_session(kc, OWNER)
    sealed = owner.client.seal(
        {"type": "secret", "request_id": None, "name": "api_key", "value": "k-999"}
    )
    owner._send_channel(sealed)
    assert owner._wait_channel("secret_result", 0)["ok"] is True
    before = len(owner.channel_events)
    owner._send_channel(sealed)  # replay
    assert owner._wait_channel("error", before) == {
        "type": "error",
        "code": "replay",
        "message": "frame 1 was already received (expected 2)",
        "seq": 1,
    }
    before = len(owner.channel_events)
    owner._send_channel({"type": "sealed", "seq": 2, "ct": "!!"})
    assert owner._wait_channel("error", before)["code"] == "malformed"
    result = owner.execute(
        "import ppml_kernel.secrets as s\n"
        "print(s.names(), repr(s.secret('api_key')), len(s.get('api_key')))"
    )
    assert "'api_key'] Secret(name='api_key', value=<hidden>, source='browser') 5" in (
        stream_text(result)
    )


def test_a_frame_that_decrypts_but_fails_validation_uses_no_sequence_number(kernel) -> None:
    """Issue 11 item 15: a bad name or an oversized value is refused, and the honest
    frame with the same number is accepted afterwards (not called a replay)."""
    _, kc = kernel
    owner = owner_session(kc, OWNER)
    for bad in (
        {"type": "secret", "request_id": None, "name": "x" * 65, "value": "v"},
        {"type": "secret", "request_id": None, "name": "ok_name", "value": 7},
        {"type": "secret", "request_id": None, "name": "big", "value": "v" * (64 * 1024 + 1)},
        {"type": "secret_decline", "request_id": "bad id!", "reason": "no"},
    ):
        before = len(owner.channel_events)
        frame = owner.client.seal(bad)
        owner.client._send_seq[crypto.DIR_B2K] -= 1  # the next honest frame reuses the number
        owner._send_channel(frame)
        assert owner._wait_channel("error", before)["code"] == "malformed"
    result = owner.send_secret("honest_one", "value", replace=True)
    assert result["type"] == "secret_result" and result["ok"] is True


def test_foreign_control_comms_are_ignored(kernel) -> None:
    _, kc = kernel
    owner = owner_session(kc, OWNER)
    owner._control("comm_open", {"comm_id": "x", "target_name": "jupyter.widget", "data": {}})
    owner._control("comm_msg", {"comm_id": "not-a-session", "data": {"type": "sealed"}})
    owner._control("comm_open", {"target_name": "ppml.attest/2", "data": {}})  # no comm_id
    assert owner.execute("print('alive')").status == "ok"


def test_ppml_secret_magic_without_a_browser_says_why(tmp_path: Path) -> None:
    km, kc = start_kernel(tmp_path)
    try:
        # No secrets yet: a teaching kernel still runs unsealed requests.
        from support.kernel_client import execute

        result = execute(kc, "%ppml secret db_password")
        assert result.status == "ok"  # a clear message, not a traceback
        err = result.text()
        assert "ppml: no browser has verified this kernel's enclave" in err
        assert "jupyterlab-ppml" in err and "Traceback" not in err
        assert "must be a name" in execute(kc, "%ppml secret 'bad name!'").text()
    finally:
        stop_kernel(km, kc)


def test_ppml_secret_magic_end_to_end(kernel) -> None:
    _, kc = kernel
    prompts: list[tuple[str, str]] = []

    def provide(name: str, prompt: str) -> str:
        prompts.append((name, prompt))
        return "wk-0001"

    owner = owner_session(kc, OWNER, secret_provider=provide, record=True)
    result = owner.execute("%ppml secret warehouse_key --prompt 'Key for the warehouse'")
    assert prompts == [("warehouse_key", "Key for the warehouse")]
    shown = json.dumps([m["content"] for m in result.outputs])
    assert "Secret 'warehouse_key' arrived end-to-end encrypted" in shown
    assert "SIMULATED SGX enclave session" in shown
    assert "warehouse_key" in json.dumps(owner.execute("%ppml secrets").outputs[0]["content"])
    assert "wk-0001" not in "".join(owner.wire)
    # Nothing secret in IPython's history either: only the name was typed.
    hist = owner.request(
        "history_request", {"hist_access_type": "tail", "n": 10, "raw": True, "output": False}
    )
    assert hist.status == "ok"
    assert "secret warehouse_key" in json.dumps(hist.reply["content"])  # the magic line
    assert "wk-0001" not in json.dumps(hist.reply["content"])
