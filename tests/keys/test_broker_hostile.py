"""The cluster key broker under hostile clients (issue 11, item 17), all on 127.0.0.1.

Malformed requests get a clear status *and* an audit entry; slow clients cannot hold
the connection slots (each request has a total deadline, and a waiting connection
gives its slot up to a newcomer); a flood of unauthenticated hellos cannot evict the
nonce an honest worker is about to use. Every test is bounded in requests and time.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

from ppml_kernel.attestation import Policy
from ppml_kernel.keys.broker import protocol as P
from ppml_kernel.keys.broker.attested import KeyBroker
from ppml_kernel.keys.broker.client import KeyClient, KeyClientError
from ppml_kernel.keys.broker.sessions import NonceBook
from ppml_kernel.keys.store import KeyStore
from ppml_kernel.tee.simulated import SimulatedAttester

pytestmark = pytest.mark.timeout(120)

KEK = bytes(range(7, 39))
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("hostile")) / "pki"


@pytest.fixture(autouse=True)
def _env(isolated_jupyter, pki, monkeypatch: pytest.MonkeyPatch):
    """Driver and worker share one simulated PKI, as on one installation."""
    monkeypatch.setenv("PPML_SIM_PKI_DIR", str(pki))
    for name in ("PPML_SIM_MRENCLAVE", "PPML_SIM_TCB_STATUS", "PPML_TEE", P.ENV_BROKER,
                 P.ENV_BROKER_ID, P.ENV_DRIVER_POLICY):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def driver(pki) -> SimulatedAttester:
    return SimulatedAttester(pki_dir=pki)


@pytest.fixture(scope="module")
def policy(driver) -> Policy:
    return Policy(mrenclave=(driver.mrenclave.hex(),), allow_simulated=True)


def make_broker(driver, policy, **kwargs) -> KeyBroker:
    return KeyBroker(policy, KeyStore({"kek-1": KEK}), driver, host=HOST, **kwargs)


def honest(broker: KeyBroker, driver, policy) -> KeyClient:
    return KeyClient(address=broker.address, driver_policy=json.dumps(policy.to_dict()),
                     attester=SimulatedAttester(pki_dir=driver.pki_dir), timeout=10)


def raw_exchange(broker: KeyBroker, data: bytes) -> tuple[int, bytes]:
    """Send ``data`` as is; the status line's code and the body (connection closed after)."""
    with socket.create_connection((HOST, broker.port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def post_raw(path: str, body: bytes, length: str | None = "auto") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: broker", "Connection: close"]
    if length == "auto":
        lines.append(f"Content-Length: {len(body)}")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- malformed requests: a clear status and an audit entry ---------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status", "fragment"),
    [
        (post_raw("/v1/attest", b"not json"), 400, "body is not JSON"),
        (post_raw("/v1/attest", b"[1, 2]"), 400, "body must be a JSON object"),
        (post_raw("/v1/attest", b"{}", length=None), 411, "Content-Length required"),
        (post_raw("/v1/attest", b"{}", length="-5"), 400, "non-negative decimal integer"),
        (post_raw("/v1/attest", b"{}", length="2_0"), 400, "non-negative decimal integer"),
        (post_raw("/v1/attest", b"", length=str(P.MAX_REQUEST_BYTES + 1)), 413, "larger than"),
        (post_raw("/v1/nothing", b"{}"), 404, "no such endpoint"),
        (b"GET /v1/keys HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n", 405, "use POST"),
        (b"BREW /v1/hello HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n", 501, "HTTP 501"),
        (b"\x16\x03\x01 garbage\r\n\r\n", 400, "HTTP 400"),
    ],
    ids=["not-json", "json-array", "no-length", "negative-length", "odd-length", "too-large",
         "unknown-path", "get", "unknown-method", "not-http"],
)
def test_malformed_requests_get_a_status_and_an_audit_entry(driver, policy, request_bytes,
                                                             status, fragment):
    with make_broker(driver, policy) as broker:
        got, _ = raw_exchange(broker, request_bytes)
        assert got == status
        refusals = broker.audit.refusals()
        assert len(refusals) == 1, [e.line() for e in refusals]
        event = refusals[0]
        assert event.event == "error" and fragment in event.reason
        assert event.peer.startswith(f"{HOST}:")
        assert honest(broker, driver, policy).fetch_key("kek-1") == KEK  # still serving


def test_body_shorter_than_its_length_is_audited(driver, policy):
    with make_broker(driver, policy) as broker:
        with socket.create_connection((HOST, broker.port), timeout=10) as s:
            s.sendall(post_raw("/v1/attest", b"{", length="100"))
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b""
        deadline = time.monotonic() + 5
        while not broker.audit.refusals() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "1 of 100 body bytes" in broker.audit.refusals()[0].reason


# -- slow clients ---------------------------------------------------------------------


def test_a_request_has_a_total_deadline_not_only_a_per_read_timeout(driver, policy):
    """One header byte every 0.5 s never trips a 2 s per-read timeout; the deadline does."""
    with make_broker(driver, policy, io_timeout=2) as broker:
        with socket.create_connection((HOST, broker.port), timeout=10) as s:
            s.settimeout(0.5)
            start = time.monotonic()
            closed_after = None
            for byte in b"POST /v1/hello HTTP/1.1\r\nX-Slow: " + b"a" * 40:
                try:
                    s.sendall(bytes([byte]))
                    if s.recv(1) == b"":
                        closed_after = time.monotonic() - start
                        break
                except TimeoutError:
                    continue
                except OSError:  # reset: the broker closed it
                    closed_after = time.monotonic() - start
                    break
                if time.monotonic() - start > 8:
                    break
        assert closed_after is not None, "the trickling connection was never dropped"
        assert 1.5 <= closed_after < 5
        assert any("no complete request within 2 s" in e.reason
                   for e in broker.audit.refusals())


def test_trickling_connections_do_not_lock_out_an_honest_worker(driver, policy):
    """40 connections sending one header byte every 2 s (the 32-slot default, 10 s budget)."""
    with make_broker(driver, policy) as broker:
        stop = threading.Event()
        slow: list[socket.socket] = []
        for _ in range(40):
            s = socket.create_connection((HOST, broker.port), timeout=5)
            s.sendall(b"P")
            slow.append(s)

        def trickle() -> None:
            while not stop.wait(2.0):
                for s in slow:
                    with contextlib.suppress(OSError):  # dropped by the broker
                        s.sendall(b"O")

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        try:
            time.sleep(2.5)  # every slot is held by a connection older than the grace second
            t0 = time.monotonic()
            assert honest(broker, driver, policy).fetch_key("kek-1") == KEK
            assert time.monotonic() - t0 < 5
            refusals = broker.audit.refusals()  # before the test hangs up on its slow sockets
        finally:
            stop.set()
            thread.join(5)
            for s in slow:
                s.close()
        reasons = [e.reason for e in refusals]
        assert any(r.startswith("busy: all 32 connection slots") for r in reasons)
        assert any(r.startswith("connection dropped: no complete request after") for r in reasons)
        assert all(e.event == "refuse" for e in refusals), reasons


# -- nonces ---------------------------------------------------------------------------


def _pub() -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        Encoding.X962, PublicFormat.UncompressedPoint)


def _call(conn: http.client.HTTPConnection, path: str, body: dict) -> tuple[int, dict]:
    conn.request("POST", path, body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def test_a_hello_flood_does_not_evict_an_honest_workers_nonce(driver, policy):
    with make_broker(driver, policy) as broker:
        conn = http.client.HTTPConnection(HOST, broker.port, timeout=10)
        status, hello = _call(conn, "/v1/hello", {})
        assert status == 200
        for _ in range(4200):  # unauthenticated, on one keep-alive connection (about 2 s)
            status, _ = _call(conn, "/v1/hello", {})
            assert status == 200
        nonce = base64.b64decode(hello["nonce"])
        worker = _pub()
        worker_quote = SimulatedAttester(pki_dir=driver.pki_dir).quote(
            P.worker_report_data(broker.broker_key, nonce, worker))
        body = {"nonce": hello["nonce"], "worker_key": P.b64e(worker),
                "quote": P.b64e(worker_quote), "keys": ["kek-1"]}
        status, answer = _call(conn, "/v1/attest", body)
        assert status == 200, answer
        assert [g["key_id"] for g in answer["grants"]] == ["kek-1"]
        status, answer = _call(conn, "/v1/attest", body)  # still single use
        assert status == 403 and "unknown, used or expired nonce" in answer["error"]
        forged = dict(body, nonce=P.b64e(nonce[:16] + bytes(16)))
        status, answer = _call(conn, "/v1/attest", forged)
        assert status == 403 and "unknown, used or expired nonce" in answer["error"]
        conn.close()


def test_nonce_book_accepts_each_issued_nonce_once_until_it_expires():
    book = NonceBook(ttl=120)
    first = book.issue(1000.0)
    many = [book.issue(1000.0 + i / 100) for i in range(3000)]
    assert book.take(many[-1], 1001.0)
    assert book.take(first, 1001.0)
    assert not book.take(first, 1001.0)
    late = book.issue(1050.0)
    assert not book.take(many[5], 1121.0)  # expired
    assert not book.take(many[-2], 1151.0)  # expired too: all of them now
    assert book.take(late, 1151.0)  # the old bits were dropped, the live ones kept
    assert not book.take(late, 1151.0)
    assert len(book._used) <= 2
    assert not NonceBook(ttl=120).take(book.issue(1200.0), 1200.0)  # another book's key
    assert not book.take(b"\x00" * 32, 1200.0)


# -- the client after a lost answer (item 11) ----------------------------------------


class _LoseAttestAnswers(http.client.HTTPConnection):
    """A network that delivers the first ``lost`` attest requests but drops their answers."""

    lost = 1
    sent: ClassVar[list[str]] = []

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        self._path = url
        type(self).sent.append(url)
        return super().request(method, url, *args, **kwargs)

    def getresponse(self):  # type: ignore[override]
        response = super().getresponse()
        if self._path == "/v1/attest" and type(self).lost > 0:
            response.read()  # the broker has answered, so it has used the nonce
            type(self).lost -= 1
            self.close()
            raise ConnectionResetError(104, "Connection reset by peer")
        return response


def test_a_lost_attest_answer_restarts_from_hello(driver, policy, monkeypatch):
    with make_broker(driver, policy) as broker:
        client = honest(broker, driver, policy)
        host, port = HOST, broker.port
        monkeypatch.setattr(_LoseAttestAnswers, "lost", 1)
        monkeypatch.setattr(_LoseAttestAnswers, "sent", [])
        monkeypatch.setattr(client, "_connect",
                            lambda: _LoseAttestAnswers(host, port, timeout=10))
        assert client.fetch_key("kek-1") == KEK
        assert _LoseAttestAnswers.sent == ["/v1/hello", "/v1/attest", "/v1/hello", "/v1/attest"]
        assert not any("nonce" in e.reason for e in broker.audit.refusals())
        # A broker that never answers: a clear error after a bounded number of fresh rounds.
        monkeypatch.setattr(_LoseAttestAnswers, "lost", 99)
        monkeypatch.setattr(_LoseAttestAnswers, "sent", [])
        fresh = honest(broker, driver, policy)
        monkeypatch.setattr(fresh, "_connect", lambda: _LoseAttestAnswers(host, port, timeout=10))
        with pytest.raises(KeyClientError, match="never answered an attestation request") as err:
            fresh.fetch_key("kek-1")
        assert "used nonce" not in str(err.value)
        assert _LoseAttestAnswers.sent.count("/v1/hello") == _LoseAttestAnswers.sent.count(
            "/v1/attest") == 3


def test_an_unknown_session_is_refused_and_audited(driver, policy):
    with make_broker(driver, policy) as broker:
        conn = http.client.HTTPConnection(HOST, broker.port, timeout=10)
        status, answer = _call(conn, "/v1/keys", {"session": P.b64e(b"s" * 16),
                                                  "keys": ["kek-1"]})
        conn.close()
        assert status == 401 and answer["reattest"] is True
        (event,) = broker.audit.refusals()
        assert event.event == "refuse" and "unknown or expired session" in event.reason
        assert event.key_ids == ("kek-1",) and event.peer.startswith(f"{HOST}:")
