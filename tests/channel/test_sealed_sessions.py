"""The relay's attacks on a real sealed kernel, through jupyter_client.

The relay holds the kernel's connection file (a second ``km.client()``): it can send any
message on any channel, read every IOPub message, replay and reorder what it saw. The
owner works through the sealed headless client. Every attack is checked for its side
effect (a marker file that must not appear, a counter that must not move), for the
secret's bytes in anything the relay received, and for the kernel and the honest
session still working afterwards.
"""

from __future__ import annotations

import copy
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from support.sealed import (
    drain_iopub,
    owner_session,
    relay_client,
    relay_reply,
    start_kernel,
    stop_kernel,
)

from ppml_kernel.channel import crypto
from ppml_kernel.channel.sealed_client import SealedClientError

pytestmark = pytest.mark.kernel
SECRET = "pw-" + "7e1a" * 6 + "-relay-must-not-see"


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory):
    """A kernel whose owner delivered a secret (so it is in sealed mode), and the relay."""
    root = tmp_path_factory.mktemp("sealed")
    km, kc = start_kernel(root)
    relay = relay_client(km)
    owner_key = crypto.generate_owner_key()
    owner = owner_session(kc, owner_key, record=True)
    assert owner.ready["claimed"] is True and owner.ready["sealed_mode"]["on"] is False
    assert owner.send_secret("db", SECRET)["ok"] is True
    marker = root / "relay-was-here"
    yield {"km": km, "kc": kc, "relay": relay, "owner": owner, "key": owner_key, "marker": marker}
    stop_kernel(km, relay, kc)


def relay_saw(relay: Any) -> str:
    return json.dumps(drain_iopub(relay, 0.5), default=repr)


def count(owner: Any, name: str) -> int:
    """A side-effect counter in the kernel, read through the owner's sealed session."""
    result = owner.execute(f"print(globals().get({name!r}, 0))")
    assert result.status == "ok", result.reply
    return int(result.outputs[0]["content"]["text"])


def test_sealed_mode_turned_on_with_the_first_secret(sealed) -> None:
    owner = sealed["owner"]
    result = owner.execute("%ppml status")
    text = json.dumps([m["content"] for m in result.outputs])
    assert "holds a secret or a dataset key" in text
    assert owner.client.owner_pub.hex() not in text  # fingerprints only
    modes = [e for e in owner.channel_events if e["type"] == "mode"]
    assert modes and modes[-1]["sealed_mode"]["on"] is True


@pytest.mark.parametrize(
    ("msg_type", "content"),
    [
        ("execute_request", {"code": "open(MARKER, 'w').write('x')", "silent": False}),
        ("complete_request", {"code": "import ppml_kernel.secrets as s; s.ge", "cursor_pos": 38}),
        ("inspect_request", {"code": "open", "cursor_pos": 4, "detail_level": 1}),
        ("history_request", {"hist_access_type": "tail", "n": 50, "raw": True, "output": True}),
        ("is_complete_request", {"code": "x = ("}),
        ("comm_info_request", {}),
    ],
)
def test_unsealed_requests_are_refused_and_never_run(sealed, msg_type, content) -> None:
    relay, marker = sealed["relay"], sealed["marker"]
    content = json.loads(json.dumps(content).replace("MARKER", repr(str(marker))[1:-1]))
    if msg_type == "execute_request":
        content["code"] = f"open({str(marker)!r}, 'w').write('x')"
    reply = relay_reply(relay, relay.session.msg(msg_type, content))
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "PPMLSealedSessionRequired"
    assert "ppml-kernel run" in reply["content"]["evalue"]
    assert SECRET not in json.dumps(reply["content"])
    assert not marker.exists()
    assert (
        relay_reply(relay, relay.session.msg("kernel_info_request", {}))["content"][
            "implementation"
        ]
        == "ppml"
    )  # kernel_info stays in the clear: the kernel is alive


def test_execute_on_the_control_channel_is_refused(sealed) -> None:
    relay, marker = sealed["relay"], sealed["marker"]
    msg = relay.session.msg(
        "execute_request", {"code": f"open({str(marker)!r}, 'w')", "silent": False}
    )
    reply = relay_reply(relay, msg, channel="control")
    assert reply["content"]["ename"] == "PPMLSealedSessionRequired"
    debug = relay_reply(relay, relay.session.msg("debug_request", {}), channel="control")
    assert debug["content"]["status"] == "error"
    assert not marker.exists()


def test_widget_comm_open_from_the_relay_is_refused(sealed) -> None:
    owner, relay = sealed["owner"], sealed["relay"]
    assert owner.execute(
        "import ipywidgets; n_comms = len(get_ipython().kernel.comm_manager.comms)"
    )
    before = count(owner, "n_comms")
    relay.shell_channel.send(
        relay.session.msg(
            "comm_open",
            {"comm_id": "relay-widget", "target_name": "jupyter.widget", "data": {"state": {}}},
        )
    )
    time.sleep(0.5)
    owner.execute("n_comms = len(get_ipython().kernel.comm_manager.comms)")
    assert count(owner, "n_comms") == before
    assert "relay-widget" not in json.dumps(owner.execute("%ppml status").outputs[0]["content"])


def test_outputs_replies_and_code_are_sealed_on_the_wire(sealed) -> None:
    """What the relay's IOPub and shell see of an owner's cell: types, ids, status only."""
    owner, relay = sealed["owner"], sealed["relay"]
    drain_iopub(relay, 0.2)
    code = "import ppml_kernel.secrets as s\nDISTINCT_CODE_7731 = 1\nprint(s.get('db')[::-1])"
    result = owner.execute(code)
    assert SECRET[::-1] in result.outputs[0]["content"]["text"]
    html = owner.execute("import pandas as pd; pd.DataFrame({'col_zq': [123456789]})")
    assert "123456789" in json.dumps(html.outputs[0]["content"])
    seen = relay_saw(relay)
    for needle in (SECRET, SECRET[::-1], "DISTINCT_CODE_7731", "123456789", "col_zq"):
        assert needle not in seen
    kinds = {m["msg_type"] for m in drain_iopub(relay, 0.1)} | {
        m["msg_type"] for m in json.loads(seen)
    }
    assert "status" in kinds  # activity stays visible for culling


def test_background_output_after_the_cell_is_sealed_too(sealed) -> None:
    owner, relay = sealed["owner"], sealed["relay"]
    drain_iopub(relay, 0.2)
    owner.execute(
        "import threading, time\n"
        "def later():\n"
        "    time.sleep(0.5); print('BACKGROUND_' + 'VALUE_991')\n"
        "threading.Thread(target=later).start()"
    )
    seen = relay_saw(relay) + relay_saw(relay)
    assert "BACKGROUND_VALUE_991" not in seen


def test_replayed_reordered_and_moved_sealed_requests_fail(sealed) -> None:
    owner, kc, relay = sealed["owner"], sealed["kc"], sealed["relay"]
    owner.execute("hits = 0")
    bump = owner.execute_content("hits += 1")
    # Replay: the relay resends a sealed request it saw.
    first = owner.seal("execute_request", bump)
    kc.shell_channel.send(first)
    owner.collect(first["header"]["msg_id"])
    # The identical message again, re-signed (the relay holds the HMAC key; a new date
    # gets it past the session layer's duplicate-signature check).
    same = copy.deepcopy(first)
    same["header"]["date"] = datetime.now(timezone.utc)
    same = relay_reply(relay, same)
    assert same["content"]["ename"] == "PPMLSealedFrameRejected"
    assert "(replay)" in same["content"]["evalue"]
    renamed = copy.deepcopy(first)  # again, under a fresh message id
    renamed["header"] = relay.session.msg_header("execute_request")
    assert "(replay)" in relay_reply(relay, renamed)["content"]["evalue"]
    assert count(owner, "hits") == 1
    # Reorder: frames n+1 before n.
    a = owner.seal("execute_request", bump)
    b = owner.seal("execute_request", bump)
    early = copy.deepcopy(b)  # the relay delivers (a re-signed copy of) b before a
    early["header"]["date"] = datetime.now(timezone.utc)
    reply_b = relay_reply(relay, early)
    assert "reorder" in reply_b["content"]["evalue"]
    kc.shell_channel.send(a)
    assert owner.collect(a["header"]["msg_id"]).status == "ok"
    kc.shell_channel.send(b)  # the honest order still works afterwards
    assert owner.collect(b["header"]["msg_id"]).status == "ok"
    assert count(owner, "hits") == 3
    # Moved: a sealed body re-attached to another message id.
    c = owner.seal("execute_request", bump)
    moved = copy.deepcopy(c)
    moved["header"] = relay.session.msg_header("execute_request")
    reply_moved = relay_reply(relay, moved)
    assert "binding" in reply_moved["content"]["evalue"]
    kc.shell_channel.send(c)
    assert owner.collect(c["header"]["msg_id"]).status == "ok"
    assert count(owner, "hits") == 4


def test_frames_from_another_session_fail(sealed) -> None:
    owner, kc, relay = sealed["owner"], sealed["kc"], sealed["relay"]
    second = owner_session(kc, sealed["key"])  # a second tab of the same owner
    owner.execute("tab_hits = 0")
    msg = second.seal("execute_request", owner.execute_content("tab_hits += 1"))
    # Claim to be the first session: the key is the second's, so it cannot open.
    spoofed = copy.deepcopy(msg)
    spoofed["content"]["ppml_sealed"]["sid"] = owner.session_id
    spoofed["header"]["date"] = datetime.now(timezone.utc)
    reply = relay_reply(relay, spoofed)
    assert reply["content"]["ename"] == "PPMLSealedFrameRejected"
    assert count(owner, "tab_hits") == 0
    # Neither session's state moved: the genuine frame still runs, once.
    kc.shell_channel.send(msg)
    assert second.collect(msg["header"]["msg_id"]).status == "ok"
    assert count(owner, "tab_hits") == 1
    # Each tab sees only its own outputs.
    result = second.execute("print('second tab only')")
    assert result.outputs[0]["content"].get("text") == "second tab only\n", result.outputs
    assert owner.execute("print('first')").outputs[0]["content"]["text"] == "first\n"


def test_a_relay_session_with_its_own_owner_key_is_refused(sealed) -> None:
    relay = sealed["relay"]
    with pytest.raises(SealedClientError, match="another party controls this kernel"):
        owner_session(relay, crypto.generate_owner_key())
    with pytest.raises(SealedClientError):
        # A relay that lies about its own checks gets the kernel's refusal instead.
        from ppml_kernel.channel.sealed_client import SealedKernelClient

        liar = SealedKernelClient(relay, allow_simulated=True)
        liar.client.bind = _bind_ignoring_owners(liar.client)  # type: ignore[method-assign]
        liar.attest()
    owner = sealed["owner"]
    status = owner.execute("%ppml status").outputs[0]["content"]["data"]["text/plain"]
    assert status.count("claimed") == 1 and "granted" not in status


def _bind_ignoring_owners(client: Any) -> Any:
    """A malicious client's bind: it signs its own proof whatever the owner list says."""
    from ppml_kernel.channel import protocol
    from ppml_kernel.channel.client import _evidence_fields

    def bind(evidence: Any, report_data: bytes, verdict: dict) -> dict:
        enclave_pub, owners, quote, _ = _evidence_fields(evidence)
        digest = crypto.owners_digest(owners)
        th = crypto.transcript_hash(
            client.nonce, client.browser_pub, enclave_pub, client.owner_pub, digest, quote
        )
        client.keys = crypto.derive_session_keys(crypto.ecdh(client._key, enclave_pub), th)
        sig = crypto.sign_owner_proof(client._owner_key, th)
        return client.seal(
            {
                "type": "finished",
                "verdict": {"status": "UpToDate", "simulated": False, "tee": "SGX"},
                "owner_sig": protocol.b64encode(sig),
            }
        )

    return bind


def test_a_forged_input_reply_never_answers_a_sealed_prompt(sealed) -> None:
    owner, relay = sealed["owner"], sealed["relay"]
    answered: list[str] = []

    def answer(prompt: str, password: bool) -> str:
        # Before the owner answers, the relay sends its own (unsealed) input_reply.
        relay.stdin_channel.send(relay.session.msg("input_reply", {"value": "relay-answer"}))
        time.sleep(0.3)
        answered.append(prompt)
        return "owner-answer"

    owner.input_provider = answer
    result = owner.execute("v = input('Your name: '); print('got', v)")
    owner.input_provider = None
    assert answered == ["Your name: "]
    assert result.outputs[-1]["content"]["text"] == "got owner-answer\n"


def test_aborted_sealed_requests_still_use_their_number(sealed) -> None:
    """After an error, ipykernel aborts queued requests without running them; the next
    sealed request must still be accepted (the aborted ones consumed their numbers)."""
    owner, kc = sealed["owner"], sealed["kc"]
    fail = owner.seal("execute_request", owner.execute_content("1/0"))
    queued = owner.seal("execute_request", owner.execute_content("print('never')"))
    kc.shell_channel.send(fail)
    kc.shell_channel.send(queued)
    assert owner.collect(fail["header"]["msg_id"]).status == "error"
    assert owner.collect(queued["header"]["msg_id"]).reply["content"]["status"] == "aborted"
    time.sleep(0.2)
    assert owner.execute("print('after')").outputs[0]["content"]["text"] == "after\n"


def test_teaching_kernel_runs_unsealed_until_it_holds_a_secret(tmp_path: Path) -> None:
    from support.kernel_client import execute

    km, kc = start_kernel(tmp_path)
    try:
        assert execute(kc, "print(1 + 1)").text().strip() == "2"
        owner = owner_session(kc, crypto.generate_owner_key())
        assert owner.ready["sealed_mode"]["on"] is False
        assert execute(kc, "x = 5").status == "ok"  # still a teaching kernel
        assert owner.send_secret("token", "t0k3n")["ok"] is True
        refused = execute(kc, "print(x)")
        assert refused.status == "error"
        assert refused.reply["content"]["ename"] == "PPMLSealedSessionRequired"
    finally:
        stop_kernel(km, kc)


def test_required_sealing_refuses_from_the_start_and_stock_clients_get_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    km, kc = start_kernel(tmp_path, env={"PPML_SEALED": "required"})
    try:
        from support.kernel_client import execute

        refused = execute(kc, "print('hi')")
        assert refused.reply["content"]["ename"] == "PPMLSealedSessionRequired"
        assert "PPMLSealedSessionRequired" in refused.text()  # what jupyter console shows
        owner = owner_session(kc, crypto.generate_owner_key())
        assert owner.ready["sealed_mode"] == {
            "on": True,
            "required": True,
            "reason": "required from start",
        }
        assert owner.execute("print('hi')").outputs[0]["content"]["text"] == "hi\n"
    finally:
        stop_kernel(km, kc)
    # nbclient, a stock frontend, against a kernel that requires sealing.
    jupyter_path = tmp_path / "jp"
    km, kc = start_kernel(jupyter_path / "kernels", env={"PPML_SEALED": "required"})
    stop_kernel(km, kc)
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('stock')")])
    client = NotebookClient(nb, kernel_name="ppml-sealed-test", timeout=120)
    with pytest.raises(CellExecutionError, match="PPMLSealedSessionRequired"):
        client.execute()


def test_install_sealed_required_writes_it_into_the_kernelspec(tmp_path: Path) -> None:
    import subprocess
    import sys

    subprocess.run(
        [
            sys.executable,
            "-m",
            "ppml_kernel.cli",
            "install",
            "--prefix",
            str(tmp_path),
            "--sealed",
            "required",
        ],
        check=True,
        capture_output=True,
    )
    spec = json.loads((tmp_path / "share/jupyter/kernels/ppml/kernel.json").read_text())
    assert spec["env"]["PPML_SEALED"] == "required"
    assert spec["metadata"]["ppml"]["sealed"] == "required"


def test_after_a_restart_sealed_requests_need_a_new_verified_session(tmp_path: Path) -> None:
    from support.kernel_client import execute

    km, kc = start_kernel(tmp_path)
    try:
        owner_key = crypto.generate_owner_key()
        owner = owner_session(kc, owner_key)
        assert owner.execute("x = 1").status == "ok"
        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=120)
        # The old session's keys died with the old process: its request is rejected.
        stale = owner.seal("execute_request", owner.execute_content("print('stale')"))
        reply = relay_reply(kc, stale)
        assert reply["content"]["ename"] == "PPMLSealedFrameRejected"
        assert "no verified owner session" in reply["content"]["evalue"]
        # A new process has no owner: the same browser attests and claims it again.
        again = owner_session(kc, owner_key)
        assert again.ready["claimed"] is True
        assert "NameError" in execute(again, "print(x)").text()  # a new process indeed
    finally:
        stop_kernel(km, kc)


def test_kernel_log_lines_never_become_notebook_output(tmp_path: Path) -> None:
    """A claim, a refusal and a rejected frame are logged to the kernel process's own
    stderr, not published on IOPub (where the relay would read them as output)."""
    km, kc = start_kernel(tmp_path)  # a teaching kernel: nothing would seal a stray line
    relay = relay_client(km)
    try:
        drain_iopub(relay, 0.3)
        owner_session(kc, crypto.generate_owner_key())  # logs "kernel claimed by owner ..."
        kc.control_channel.send(  # logs "ignoring comm_open for 'x' on the control channel"
            kc.session.msg("comm_open", {"comm_id": "x", "target_name": "x", "data": {}})
        )
        streams = [m for m in drain_iopub(relay, 1.5) if m["msg_type"] == "stream"]
        assert streams == []
    finally:
        stop_kernel(km, relay, kc)


PROBE = """
import threading, time
from comm import create_comm
probe_seen = []
probe = create_comm(target_name="ppml.test.probe")
_route_before = probe._reply_subshell_for
def _route(data, default):
    probe_seen.append(("arrival", threading.current_thread().name, data))
    return _route_before(data, default)
probe._reply_subshell_for = _route
probe.on_msg(lambda m: probe_seen.append(("handled", threading.current_thread().name,
                                          m["content"]["data"])))
def wait_for_arrival(seconds):
    before = len(probe_seen)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(probe_seen) == before:
        time.sleep(0.05)
    return [s[:2] for s in probe_seen[before:]]
print(probe.comm_id)
"""


def test_a_sealed_comm_message_reaches_its_comm_while_a_cell_runs(sealed) -> None:
    """A sealed widget click is opened as it arrives (shell-channel thread), so its comm
    sees it while the cell holds the main thread; it is handled once, after the cell."""
    owner, kc = sealed["owner"], sealed["kc"]
    comm_id = owner.execute(PROBE).outputs[0]["content"]["text"].strip()
    busy = owner.submit("execute_request",
                        owner.execute_content("print(wait_for_arrival(20))"))
    time.sleep(1)
    click = owner.seal("comm_msg", {"comm_id": comm_id, "data": {"event": "click"}})
    kc.shell_channel.send(click)
    printed = owner.collect(busy).outputs[0]["content"]["text"]
    assert printed.strip() == "[('arrival', 'Shell channel')]", printed
    seen = owner.execute("print([s[0] for s in probe_seen])").outputs[0]["content"]["text"]
    assert seen.strip() == "['arrival', 'handled']", seen


def test_a_replayed_sealed_click_does_nothing(sealed) -> None:
    """The relay resends a sealed click it saw (re-signed): neither the comm's arrival
    hook nor its handler sees it; it is rejected as a replay and counted."""
    owner, kc, relay = sealed["owner"], sealed["kc"], sealed["relay"]
    if owner.execute("print('probe' in globals())").outputs[0]["content"]["text"] != "True\n":
        owner.execute(PROBE)
    comm_id = owner.execute("print(probe.comm_id)").outputs[0]["content"]["text"].strip()
    click = owner.seal("comm_msg", {"comm_id": comm_id, "data": {"event": "click"}})
    kc.shell_channel.send(click)
    time.sleep(0.5)
    before = owner.execute(
        "print(len(probe_seen), get_ipython().kernel.sealing.rejected['replay'])"
    ).outputs[0]["content"]["text"].split()
    busy = owner.submit("execute_request",
                        owner.execute_content("print(wait_for_arrival(5))"))
    time.sleep(1)
    replay = copy.deepcopy(click)
    replay["header"]["date"] = datetime.now(timezone.utc)
    relay.shell_channel.send(replay)
    printed = owner.collect(busy).outputs[0]["content"]["text"]
    assert printed.strip() == "[]", printed
    time.sleep(0.5)
    after = owner.execute(
        "print(len(probe_seen), get_ipython().kernel.sealing.rejected['replay'])"
    ).outputs[0]["content"]["text"].split()
    assert after == [before[0], str(int(before[1]) + 1)], (before, after)
