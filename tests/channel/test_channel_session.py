"""The kernel side of ppml-attest/2 end to end, with the Python reference browser client.

Real parts: a real DCAP v3 quote from the test PKI for every handshake, verified by
dcap-qvl with that PKI's root; real threads for the blocking secret request.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from support import dcap_synth

from ppml_kernel.channel import crypto, protocol
from ppml_kernel.channel.client import BrowserClient, verifier_for_root
from ppml_kernel.channel.manager import (
    ChannelManager,
    NoVerifiedSession,
    SecretDeclined,
    SecretTimeout,
)
from ppml_kernel.channel.protocol import ProtocolError

NOW = 1767225600
OWNER = crypto.generate_owner_key()  # the user's browser's long-term key


@pytest.fixture(scope="module")
def pki() -> dcap_synth.Pki:
    return dcap_synth.Pki(now=NOW)


class Wire:
    """What the kernel sent to one browser session (stands in for the comm)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.cond = threading.Condition()

    def __call__(self, msg: dict[str, Any]) -> None:
        json.dumps(msg)  # everything must be JSON-serialisable for the comm
        with self.cond:
            self.sent.append(msg)
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float = 5.0) -> dict[str, Any]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.sent) >= n, timeout), self.sent
            return self.sent[n - 1]


def connect(
    manager: ChannelManager,
    pki: dcap_synth.Pki,
    ref: str = "comm-1",
    wire: Wire | None = None,
    owner_key: Any = OWNER,
) -> tuple[BrowserClient, Wire]:
    client = BrowserClient(owner_key=owner_key)
    wire = wire or Wire()
    manager.on_open(ref, client.hello(), wire)
    evidence = wire.wait_for(1)
    assert evidence["type"] == "evidence", evidence
    finished = client.accept(evidence, verifier_for_root(pki.root_der), at=NOW)
    manager.on_message(ref, finished)
    assert client.open(wire.wait_for(2))["type"] == "ready"
    return client, wire


def test_handshake_verifies_and_binds(pki: dcap_synth.Pki) -> None:
    stored: dict[str, str] = {}
    manager = ChannelManager(
        dcap_synth.SynthAttester(pki), secret_sink=lambda n, v, s: stored.__setitem__(n, v)
    )
    client, wire = connect(manager, pki)
    assert client.verdict["status"] == "UpToDate"
    [session] = manager.ready_sessions()
    assert session.verdict["status"] == "UpToDate"
    # Speed is benchmarks/bench_channel.py's job (no wall-clock bounds in tests): the
    # session reports its handshake time.
    assert session.timings["handshake_ms"] > 0, session.timings
    manager.on_message(
        "comm-1",
        client.seal(
            {"type": "secret", "request_id": None, "name": "db_password", "value": "s3cr3t"}
        ),
    )
    assert client.open(wire.wait_for(3)) == {
        "type": "secret_result",
        "request_id": None,
        "name": "db_password",
        "ok": True,
    }
    assert stored == {"db_password": "s3cr3t"}
    assert "s3cr3t" not in json.dumps(manager.status())


def test_intel_root_rejects_the_test_pki(pki: dcap_synth.Pki) -> None:
    manager = ChannelManager(dcap_synth.SynthAttester(pki))
    client, wire = BrowserClient(), Wire()
    manager.on_open("c", client.hello(), wire)
    with pytest.raises(ValueError):
        client.accept(wire.wait_for(1), verifier_for_root(None), at=NOW)


def test_substituted_enclave_key_fails_binding(pki: dcap_synth.Pki) -> None:
    manager = ChannelManager(dcap_synth.SynthAttester(pki))
    client, wire = BrowserClient(), Wire()
    manager.on_open("c", client.hello(), wire)
    evidence = dict(wire.wait_for(1))
    evidence["enclave_pub"] = protocol.b64encode(BrowserClient().browser_pub)  # a relay's own key
    with pytest.raises(ProtocolError, match="REPORT_DATA"):
        client.accept(evidence, verifier_for_root(pki.root_der), at=NOW)


def test_quote_for_another_browser_fails_binding(pki: dcap_synth.Pki) -> None:
    manager = ChannelManager(dcap_synth.SynthAttester(pki))
    victim, wire = BrowserClient(), Wire()
    manager.on_open("c", victim.hello(), wire)
    with pytest.raises(ProtocolError, match="REPORT_DATA"):
        BrowserClient().accept(wire.wait_for(1), verifier_for_root(pki.root_der), at=NOW)


def test_replay_reorder_and_tamper_are_rejected_and_the_session_survives(
    pki: dcap_synth.Pki,
) -> None:
    stored: dict[str, str] = {}
    manager = ChannelManager(
        dcap_synth.SynthAttester(pki), secret_sink=lambda n, v, s: stored.__setitem__(n, v)
    )
    client, wire = connect(manager, pki)
    first = client.seal({"type": "secret", "request_id": None, "name": "a", "value": "1"})
    second = client.seal({"type": "secret", "request_id": None, "name": "b", "value": "2"})
    manager.on_message("comm-1", second)  # reordered
    assert wire.wait_for(3) == {
        "type": "error",
        "code": "reorder",
        "message": "frame 2 arrived out of order (expected 1)",
        "seq": 2,
    }
    tampered = dict(
        first,
        ct=protocol.b64encode(
            bytes([protocol.b64decode(first["ct"], "ct")[0] ^ 1])
            + protocol.b64decode(first["ct"], "ct")[1:]
        ),
    )
    manager.on_message("comm-1", tampered)
    assert wire.wait_for(4)["code"] == "decrypt"
    manager.on_message("comm-1", first)
    assert client.open(wire.wait_for(5))["ok"] is True
    manager.on_message("comm-1", first)  # replayed
    assert wire.wait_for(6)["code"] == "replay"
    manager.on_message("comm-1", second)
    assert client.open(wire.wait_for(7))["ok"] is True
    assert stored == {"a": "1", "b": "2"}
    assert len(manager.status()["errors"]) == 3


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not a dict", "malformed"),
        ({"seq": 0}, "malformed"),
        ({"type": "sealed", "seq": -1, "ct": ""}, "malformed"),
        ({"type": "sealed", "seq": 0, "ct": "%%%"}, "malformed"),
        ({"type": "sealed", "seq": True, "ct": "AAAA"}, "malformed"),
        ({"type": "secret", "name": "x"}, "unexpected"),
        ({"type": "sealed", "seq": 1, "ct": "AAAA"}, "reorder"),
        ({"type": "sealed", "seq": 0, "ct": "AAAA"}, "decrypt"),
    ],
)
def test_malformed_frames_get_clear_errors(pki: dcap_synth.Pki, message: Any, code: str) -> None:
    manager = ChannelManager(dcap_synth.SynthAttester(pki))
    client, wire = BrowserClient(), Wire()
    manager.on_open("c", client.hello(), wire)
    wire.wait_for(1)
    manager.on_message("c", message)
    err = wire.wait_for(2)
    assert err["type"] == "error" and err["code"] == code, err


def test_secret_before_finished_is_refused(pki: dcap_synth.Pki) -> None:
    manager = ChannelManager(dcap_synth.SynthAttester(pki), secret_sink=lambda *a: None)
    client, wire = BrowserClient(), Wire()
    manager.on_open("c", client.hello(), wire)
    # finished is seq 0 ...
    client.accept(wire.wait_for(1), verifier_for_root(pki.root_der), at=NOW)
    manager.on_message(
        "c", client.seal({"type": "secret", "request_id": None, "name": "x", "value": "v"})
    )
    assert wire.wait_for(2)["code"] == "reorder"  # ... and was never sent, so seq 1 is refused
    assert manager.ready_sessions() == []


@pytest.mark.parametrize(
    "hello",
    [
        {"type": "hello", "protocol": "ppml-attest/0", "nonce": "", "browser_pub": ""},
        {"type": "hello", "protocol": "ppml-attest/1", "nonce": "AAAA", "browser_pub": ""},
        {
            "type": "hello",
            "protocol": "ppml-attest/1",
            "nonce": protocol.b64encode(bytes(32)),
            "browser_pub": protocol.b64encode(b"\x04" + bytes(64)),
        },
    ],
)
def test_bad_hello_is_refused_without_a_quote(pki: dcap_synth.Pki, hello: dict) -> None:
    attester = dcap_synth.SynthAttester(pki)
    manager = ChannelManager(attester)
    wire = Wire()
    manager.on_open("c", hello, wire)
    assert wire.wait_for(1)["type"] == "error"
    assert attester.quotes == 0
    assert manager.status()["sessions"] == []


def test_attester_failure_is_reported(pki: dcap_synth.Pki) -> None:
    class Broken(dcap_synth.SynthAttester):
        def quote(self, report_data: bytes) -> bytes:
            raise OSError("/dev/sgx is not there")

    manager = ChannelManager(Broken(pki))
    wire = Wire()
    manager.on_open("c", BrowserClient().hello(), wire)
    err = wire.wait_for(1)
    assert err["code"] == "attester" and "/dev/sgx" in err["message"]


def test_request_secret_blocks_until_the_browser_answers(pki: dcap_synth.Pki) -> None:
    manager = ChannelManager(dcap_synth.SynthAttester(pki))
    client, wire = connect(manager, pki)
    other, other_wire = connect(manager, pki, "comm-2")

    def browser() -> None:
        request = client.open(wire.wait_for(3))
        assert request["type"] == "secret_request" and request["name"] == "db_password"
        time.sleep(0.2)
        manager.on_message(
            "comm-1",
            client.seal(
                {
                    "type": "secret",
                    "request_id": request["request_id"],
                    "name": "db_password",
                    "value": "pw",
                }
            ),
        )

    t = threading.Thread(target=browser)
    t.start()
    start = time.monotonic()
    assert manager.request_secret("db_password", "Password for the DB", timeout=10) == "pw"
    assert time.monotonic() - start >= 0.2
    t.join()
    # The other tab saw the request, then its cancellation.
    assert other.open(other_wire.wait_for(3))["type"] == "secret_request"
    cancel = other.open(other_wire.wait_for(4))
    assert cancel["type"] == "secret_cancel" and "another window" in cancel["reason"]
    assert client.open(wire.wait_for(4))["ok"] is True


def test_an_interrupt_while_the_request_goes_out_still_withdraws_it(pki: dcap_synth.Pki) -> None:
    class InterruptedWire(Wire):
        def __call__(self, msg: dict[str, Any]) -> None:
            super().__call__(msg)
            if len(self.sent) == 3:  # the secret_request was delivered, then Ctrl-C
                raise KeyboardInterrupt

    manager = ChannelManager(dcap_synth.SynthAttester(pki))
    client, wire = connect(manager, pki)
    _, late_wire = connect(manager, pki, "comm-2", InterruptedWire())
    with pytest.raises(KeyboardInterrupt):
        manager.request_secret("db_password", timeout=10)
    assert manager.status()["pending"] == []
    assert client.open(wire.wait_for(3))["type"] == "secret_request"
    cancel = client.open(wire.wait_for(4))
    assert cancel["type"] == "secret_cancel" and cancel["reason"] == "the cell was interrupted"
    assert len(late_wire.sent) == 4  # the browser that got the request last is told too


def test_request_secret_wrong_name_is_refused(pki: dcap_synth.Pki) -> None:
    manager = ChannelManager(dcap_synth.SynthAttester(pki))
    client, wire = connect(manager, pki)

    def browser() -> None:
        request = client.open(wire.wait_for(3))
        manager.on_message(
            "comm-1",
            client.seal(
                {
                    "type": "secret",
                    "request_id": request["request_id"],
                    "name": "other",
                    "value": "x",
                }
            ),
        )
        result = client.open(wire.wait_for(4))
        assert result["ok"] is False and "db_password" in result["message"]
        manager.on_message(
            "comm-1",
            client.seal(
                {
                    "type": "secret_decline",
                    "request_id": request["request_id"],
                    "reason": "Cancelled",
                }
            ),
        )

    t = threading.Thread(target=browser)
    t.start()
    with pytest.raises(SecretDeclined, match="Cancelled"):
        manager.request_secret("db_password", timeout=10)
    t.join()


def test_request_secret_times_out(pki: dcap_synth.Pki) -> None:
    manager = ChannelManager(dcap_synth.SynthAttester(pki))
    client, wire = connect(manager, pki)
    with pytest.raises(SecretTimeout, match=r"0\.3 s"):
        manager.request_secret("x", timeout=0.3)
    assert client.open(wire.wait_for(3))["type"] == "secret_request"
    assert manager.status()["pending"] == []


def test_request_secret_without_session_says_why() -> None:
    manager = ChannelManager(dcap_synth.SynthAttester(dcap_synth.Pki(now=NOW)))
    with pytest.raises(NoVerifiedSession, match="jupyterlab-ppml"):
        manager.request_secret("x")


def test_aborted_session_is_not_ready(pki: dcap_synth.Pki) -> None:
    manager = ChannelManager(dcap_synth.SynthAttester(pki))
    wire = Wire()
    manager.on_open("c", BrowserClient().hello(), wire)
    manager.on_message("c", {"type": "abort", "reason": "MRENCLAVE does not match the policy"})
    [s] = manager.status()["sessions"]
    assert s["state"] == "closed" and "MRENCLAVE" in s["abort_reason"]
    assert manager.ready_sessions() == []
    with pytest.raises(NoVerifiedSession, match=r"rejected this kernel.s enclave \(MRENCLAVE"):
        manager.request_secret("x")


def test_sessions_are_capped(pki: dcap_synth.Pki) -> None:
    manager = ChannelManager(dcap_synth.SynthAttester(pki), max_sessions=2)
    for i in range(4):
        manager.on_open(f"c{i}", BrowserClient().hello(), Wire())
    assert [s["ref"] for s in manager.status()["sessions"]] == ["c2", "c3"]


def test_packaged_intel_root_is_the_pinned_one() -> None:
    import hashlib

    from ppml_kernel.channel.client import intel_root_der

    assert (
        hashlib.sha256(intel_root_der()).hexdigest()
        == "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
    )


# ------------------------------------------------------------------ ownership (ppml-attest/2)
def _evidence_for(manager: ChannelManager, client: BrowserClient, ref: str) -> dict[str, Any]:
    wire = Wire()
    manager.on_open(ref, client.hello(), wire)
    return wire.wait_for(1), wire


def test_the_first_verified_owner_claims_and_strangers_are_refused(pki: dcap_synth.Pki) -> None:
    """A relay with a valid handshake and an owner key of its own, on a kernel that the
    user owns, never gets a ready session: it cannot send secrets or answer prompts."""
    stored: dict[str, str] = {}
    manager = ChannelManager(
        dcap_synth.SynthAttester(pki), secret_sink=lambda n, v, s: stored.__setitem__(n, v)
    )
    user, _ = connect(manager, pki)
    assert manager.owners().keys() == [user.owner_pub]
    relay = BrowserClient()  # its own owner key
    evidence, wire = _evidence_for(manager, relay, "relay")
    # The evidence shows the relay who owns the kernel: the relay's client itself refuses.
    with pytest.raises(ProtocolError) as own_check:
        relay.accept(evidence, verifier_for_root(pki.root_der), at=NOW)
    assert own_check.value.code == "not_owner"
    # A relay that skips that check and sends a finished anyway is refused by the kernel.
    enclave_pub = protocol.b64decode(evidence["enclave_pub"], "enclave_pub")
    quote = protocol.b64decode(evidence["quote"], "quote")
    digest = crypto.owners_digest(manager.owners().keys())
    th = crypto.transcript_hash(
        relay.nonce, relay.browser_pub, enclave_pub, relay.owner_pub, digest, quote
    )
    relay.keys = crypto.derive_session_keys(crypto.ecdh(relay._key, enclave_pub), th)
    sig = crypto.sign_owner_proof(relay._owner_key, th)
    manager.on_message(
        "relay",
        relay.seal(
            {
                "type": "finished",
                "verdict": {"status": "UpToDate", "simulated": False},
                "owner_sig": protocol.b64encode(sig),
            }
        ),
    )
    assert wire.wait_for(2)["code"] == "not_owner"
    assert not manager.has_session("relay")
    assert [s.ref for s in manager.ready_sessions()] == ["comm-1"]
    assert manager.owners().keys() == [user.owner_pub]
    # Its unsolicited secret goes nowhere.
    manager.on_message(
        "relay",
        relay.seal({"type": "secret", "request_id": None, "name": "db_key", "value": "relay's"}),
    )
    assert stored == {}


def test_a_relay_that_claims_a_fresh_kernel_first_makes_the_user_refuse(
    pki: dcap_synth.Pki,
) -> None:
    manager = ChannelManager(dcap_synth.SynthAttester(pki))
    relay, _ = connect(manager, pki, ref="relay", owner_key=crypto.generate_owner_key())
    user = BrowserClient(owner_key=OWNER)
    evidence, wire = _evidence_for(manager, user, "user")
    with pytest.raises(ProtocolError, match="another party controls this kernel"):
        user.accept(evidence, verifier_for_root(pki.root_der), at=NOW)
    assert user.keys is None and len(wire.sent) == 1  # the user sent nothing sealed
    assert manager.owners().keys() == [relay.owner_pub]


def test_two_claims_racing_on_a_fresh_kernel_only_one_wins(pki: dcap_synth.Pki) -> None:
    """Both saw an unowned kernel in their evidence; the second finished is refused."""
    manager = ChannelManager(dcap_synth.SynthAttester(pki))
    a, b = BrowserClient(owner_key=OWNER), BrowserClient()
    ev_a, wire_a = _evidence_for(manager, a, "a")
    ev_b, wire_b = _evidence_for(manager, b, "b")
    assert ev_a["owners"] == ev_b["owners"] == []
    fin_a = a.accept(ev_a, verifier_for_root(pki.root_der), at=NOW)
    fin_b = b.accept(ev_b, verifier_for_root(pki.root_der), at=NOW)
    manager.on_message("b", fin_b)
    assert b.open(wire_b.wait_for(2))["claimed"] is True
    manager.on_message("a", fin_a)
    assert wire_a.wait_for(2)["code"] == "not_owner"
    assert manager.owners().keys() == [b.owner_pub]


def test_a_forged_owner_signature_is_refused(pki: dcap_synth.Pki) -> None:
    manager = ChannelManager(dcap_synth.SynthAttester(pki))
    client = BrowserClient(owner_key=OWNER)
    evidence, wire = _evidence_for(manager, client, "c")
    finished = client.accept(evidence, verifier_for_root(pki.root_der), at=NOW)
    # Re-seal the same finished with a signature by another key, same sequence number.
    client._send_seq[crypto.DIR_B2K] = 0
    bad_sig = crypto.sign_owner_proof(crypto.generate_owner_key(), client.keys.transcript_hash)
    forged = client.seal(
        {"type": "finished", "verdict": {}, "owner_sig": protocol.b64encode(bad_sig)}
    )
    manager.on_message("c", forged)
    assert wire.wait_for(2)["code"] == "not_owner"
    assert len(manager.owners()) == 0 and not manager.ready_sessions()
    assert finished["seq"] == 0


def test_owners_grant_access_with_a_signed_grant(pki: dcap_synth.Pki) -> None:
    manager = ChannelManager(dcap_synth.SynthAttester(pki))
    owner, wire = connect(manager, pki)
    colleague_key = crypto.generate_owner_key()
    colleague_pub = crypto.public_bytes(colleague_key)
    manager.on_message("comm-1", owner.grant(colleague_pub, "colleague laptop"))
    result = owner.open(wire.wait_for(3))
    assert result["type"] == "owner_result" and result["ok"] is True
    assert [o["label"] for o in result["owners"]] == ["owner", "colleague laptop"]
    # The colleague now connects; the quote binds both owners.
    colleague, cwire = connect(manager, pki, ref="colleague", owner_key=colleague_key)
    assert colleague.owners == [owner.owner_pub, colleague_pub]
    # A grant whose signature is not the session owner's is refused, nothing added.
    stranger = crypto.public_bytes(crypto.generate_owner_key())
    bad = colleague.seal(
        {
            "type": "owner_grant",
            "owner_pub": protocol.b64encode(stranger),
            "label": "x",
            "sig": protocol.b64encode(
                crypto.sign_grant(crypto.generate_owner_key(), colleague.keys.session_id, stranger)
            ),
        }
    )
    manager.on_message("colleague", bad)
    refused = colleague.open(cwire.wait_for(3))
    assert refused["ok"] is False and "does not verify" in refused["message"]
    assert len(manager.owners()) == 2


def test_a_second_value_for_a_secret_is_refused_unless_replace(pki: dcap_synth.Pki) -> None:
    from ppml_kernel.secrets import BrowserSecretStore

    store = BrowserSecretStore()
    manager = ChannelManager(
        dcap_synth.SynthAttester(pki),
        secret_sink=lambda n, v, s: store.put(n, v, s),
        secret_exists=store.__contains__,
    )
    client, wire = connect(manager, pki)

    def send(value: str, **extra: Any) -> dict[str, Any]:
        n = len(wire.sent) + 1
        manager.on_message(
            "comm-1",
            client.seal(
                {"type": "secret", "request_id": None, "name": "k", "value": value, **extra}
            ),
        )
        return client.open(wire.wait_for(n))

    assert send("first")["ok"] is True
    second = send("second")
    assert second["ok"] is False and "already holds" in second["message"]
    assert store.get("k") == "first"
    assert send("third", replace=True)["ok"] is True and store.get("k") == "third"


def test_failed_handshakes_close_their_comm_and_floods_are_bounded(pki: dcap_synth.Pki) -> None:
    """Issue 11 item 16: a failed hello and an evicted session release their comm."""
    manager = ChannelManager(dcap_synth.SynthAttester(pki), max_sessions=3)
    closed: list[str] = []
    for i in range(20):
        manager.on_open(f"bad{i}", {"type": "hello"}, Wire(), lambda i=i: closed.append(f"bad{i}"))
    assert closed == [f"bad{i}" for i in range(20)]
    for i in range(6):
        client = BrowserClient()
        manager.on_open(f"ok{i}", client.hello(), Wire(), lambda i=i: closed.append(f"ok{i}"))
    assert closed[20:] == ["ok0", "ok1", "ok2"]  # evicted ones, oldest first
    assert len(manager.status()["sessions"]) == 3


def test_a_hello_flood_does_not_evict_the_owners_ready_session(pki: dcap_synth.Pki) -> None:
    manager = ChannelManager(
        dcap_synth.SynthAttester(pki), secret_sink=lambda n, v, s: None, max_sessions=3
    )
    owner, wire = connect(manager, pki, ref="owner")
    for i in range(12):  # the relay's hellos, never finished
        manager.on_open(f"relay{i}", BrowserClient().hello(), Wire())
    assert [s.ref for s in manager.ready_sessions()] == ["owner"]
    assert len(manager.status()["sessions"]) == 3
    manager.on_message(
        "owner",
        owner.seal({"type": "secret", "request_id": None, "name": "still_here", "value": "v"}),
    )
    assert owner.open(wire.wait_for(3))["ok"] is True


def test_too_many_concurrent_handshakes_are_told_busy(pki: dcap_synth.Pki) -> None:
    gate = threading.Event()

    class SlowAttester(dcap_synth.SynthAttester):
        def quote(self, report_data: bytes) -> bytes:
            gate.wait(10)
            return super().quote(report_data)

    manager = ChannelManager(SlowAttester(pki))
    wires = [Wire() for _ in range(6)]
    threads = [
        threading.Thread(target=manager.on_open, args=(f"c{i}", BrowserClient().hello(), w))
        for i, w in enumerate(wires)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while sum(bool(w.sent) for w in wires) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    for t in threads:
        t.join(10)
    codes = [w.sent[0].get("code", w.sent[0]["type"]) for w in wires]
    assert codes.count("busy") == 2 and codes.count("evidence") == 4


def test_the_handshake_runs_off_the_control_thread(pki: dcap_synth.Pki) -> None:
    """Issue 11 item 10: a slow quote or collateral download never holds the control
    thread, so interrupts and shutdown are served while a browser is being answered."""
    from ppml_kernel.channel.jupyter import install

    release = threading.Event()

    class SlowAttester(dcap_synth.SynthAttester):
        def quote(self, report_data: bytes) -> bytes:
            release.wait(20)
            return super().quote(report_data)

    sent: list[dict[str, Any]] = []

    class Comm:
        def __init__(self, comm_id: str) -> None:
            self.comm_id = comm_id

        def on_msg(self, callback: Any) -> None: ...

        def on_close(self, callback: Any) -> None: ...

        def send(self, data: dict[str, Any]) -> None:
            sent.append(data)

        def close(self, data: Any = None) -> None: ...

    class CommManager:
        """The part of ipykernel's comm manager that install() uses."""

        def __init__(self) -> None:
            self.targets: dict[str, Any] = {}

        def register_target(self, name: str, callback: Any) -> None:
            self.targets[name] = callback

        def comm_open(self, stream: Any, ident: Any, msg: dict[str, Any]) -> None:
            content = msg["content"]
            self.targets[content["target_name"]](Comm(content["comm_id"]), msg)

    class Kernel:
        def __init__(self) -> None:
            self.control_handlers: dict[str, Any] = {}
            self.comm_manager = CommManager()

    kernel = Kernel()
    install(kernel, attester=SlowAttester(pki), hook_getpass=False)
    hello = {
        "header": {"msg_type": "comm_open", "msg_id": "m1"},
        "content": {
            "comm_id": "c1",
            "target_name": "ppml.attest/2",
            "data": BrowserClient().hello(),
        },
    }
    start = time.monotonic()
    kernel.control_handlers["comm_open"](None, [], hello)
    returned = time.monotonic() - start
    assert returned < 5, f"the control handler waited {returned:.1f} s for the quote"
    assert sent == []  # the evidence is still being made
    release.set()
    deadline = time.monotonic() + 20
    while not sent:
        assert time.monotonic() < deadline, "no evidence after the quote was released"
        time.sleep(0.05)
    assert sent[0]["type"] == "evidence"
