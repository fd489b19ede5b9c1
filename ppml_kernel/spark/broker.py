"""The driver's key broker: executors get a key only after their quote passes policy.

A small threaded HTTP server (see :mod:`ppml_kernel.spark.protocol` for the messages).
It authenticates executors by attestation alone: a fresh single-use nonce, a quote
binding that nonce and the worker's ephemeral public key, dcap-qvl verification and
the cluster :class:`~ppml_kernel.attestation.Policy` (measurement allow-list, TCB
status, simulation only when allowed). Keys leave it only sealed to the attested
worker's key. Requests are size-bounded and time-limited, connections are capped,
and a malformed request gets an error answer, never a crash. Every attestation,
grant and refusal goes to the :class:`~ppml_kernel.spark.audit.AuditLog`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import socket
import struct
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

from ppml_kernel.spark import protocol as P
from ppml_kernel.spark.audit import ATTEST, ERROR, GRANT, PROBE, REFUSE, AuditEvent, AuditLog

if TYPE_CHECKING:
    from ppml_kernel.attestation import Policy, VerificationResult, Verifier
    from ppml_kernel.tee.base import Attester


class KeySource(Protocol):
    """Where the broker finds keys by id (the kernel's secret store has this shape)."""

    def get(self, name: str) -> bytes | None: ...


class KeyRing:
    """A minimal in-memory key source: names are visible, values never are."""

    def __init__(self, keys: dict[str, bytes] | None = None) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        for name, value in (keys or {}).items():
            self.put(name, value)

    def put(self, name: str, value: bytes) -> None:
        P.check_key_id(name)
        if not isinstance(value, (bytes, bytearray)) or not value:
            raise TypeError("a key must be non-empty bytes")
        with self._lock:
            self._keys[name] = bytes(value)

    def get(self, name: str) -> bytes | None:
        with self._lock:
            return self._keys.get(name)

    def delete(self, name: str) -> bool:
        with self._lock:
            return self._keys.pop(name, None) is not None

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._keys)

    def __repr__(self) -> str:
        return f"<KeyRing names={self.names()!r}>"


WrappedKeyFields = P.WrappedKeyFields
Unwrapper = Callable[[str, WrappedKeyFields, bytes], bytes]
Wrapper = Callable[[str, bytes, bytes], Any]  # -> an object with key_check, nonce, ciphertext


def _dataset_keys(action: str) -> Any:
    """The dataset layer's key module, imported on first use (the broker runs without it)."""
    try:
        from ppml_kernel.data import keys as data_keys
    except ImportError:
        raise LookupError(f"this driver has no dataset layer to {action} keys") from None
    return data_keys


def _kek(keys: KeySource, key_id: str) -> bytes:
    kek = keys.get(key_id)
    if kek is None:
        raise LookupError(f"no key with key id {key_id!r} in the driver")
    return kek


def dataset_unwrapper(keys: KeySource) -> Unwrapper:
    """Open a dataset's wrapped data key with the KEK held here (the KEK never leaves)."""

    def unwrap(key_id: str, wrapped: WrappedKeyFields, context: bytes) -> bytes:
        unwrap_with_kek = _dataset_keys("unwrap").unwrap_with_kek
        return unwrap_with_kek(_kek(keys, key_id), key_id, wrapped, context)

    return unwrap


def dataset_wrapper(keys: KeySource) -> Wrapper:
    """Seal a writer's new data key under the KEK held here (the KEK never leaves)."""

    def wrap(key_id: str, data_key: bytes, context: bytes) -> Any:
        wrap_with_kek = _dataset_keys("wrap").wrap_with_kek
        return wrap_with_kek(_kek(keys, key_id), key_id, data_key, context)

    return wrap


@dataclass(frozen=True)
class Attestation:
    """The broker's verdict on one executor-side worker process (for tables and tests)."""

    executor: str
    executor_id: str
    host: str
    peer: str
    pid: str
    tee: str
    ok: bool
    verdict: str
    reason: str
    at: float
    verify_ms: float
    measurement: str = ""
    tcb_status: str = ""
    simulated: bool = False
    probe: str = ""


@dataclass
class _Session:
    id: bytes
    aead: Any  # AESGCM
    executor: str
    expires: float


@dataclass
class _Request:
    """A parsed attest request's worker identity (untrusted labels, cleaned)."""

    executor_id: str
    app_id: str
    host: str
    pid: str
    tee: str
    peer: str
    name: str = field(init=False)

    def __post_init__(self) -> None:
        who = f"executor {self.executor_id}" if self.executor_id else "unknown executor"
        where = self.host or self.peer
        self.name = f"{who} on {where} (pid {self.pid or '?'})"


class _NonceBook:
    """Issues nonces and accepts each one once, keeping 1 bit per nonce issued in the last TTL.

    A nonce is ``expiry (8) || counter (8) || HMAC-SHA256(book key, both)[:16]``: the
    broker can check that it issued it, and when it expires, without remembering it.
    Only *use* is recorded, in a bitmap indexed by counter. So a flood of unauthenticated
    hellos costs the broker one MAC each and cannot evict another worker's nonce; the
    bitmap is bounded by :attr:`WINDOW` counters (2 MiB), which a flooder would have to
    request within one TTL before anyone else's nonce were forgotten (then refused,
    never accepted twice).
    """

    WINDOW = 1 << 24
    _BODY = struct.Struct(">QQ")

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._next = 0  # the counter of the next nonce
        self._floor = 0  # counters below it are refused (expired), a multiple of 8
        self._used = bytearray()  # bit i set: counter floor + i was used
        self._groups: deque[list[float]] = deque()  # [first counter, latest expiry], ~1 s each

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:16]

    def issue(self, now: float) -> bytes:
        expires = now + self.ttl
        with self._lock:
            self._advance(now)
            counter = self._next
            self._next += 1
            if not self._groups or self._groups[-1][1] < expires - 1.0:
                self._groups.append([counter, expires])
            else:
                self._groups[-1][1] = expires
            if self._next - self._floor > self.WINDOW:  # only under an absurd flood
                self._move_floor(self._next - self.WINDOW)
        body = self._BODY.pack(int(expires * 1000), counter)
        return body + self._tag(body)

    def take(self, nonce: bytes, now: float) -> bool:
        """True exactly once for a nonce this book issued and that has not expired."""
        if len(nonce) != P.NONCE_SIZE:
            return False
        body, tag = nonce[:16], nonce[16:]
        if not hmac.compare_digest(tag, self._tag(body)):
            return False
        expires_ms, counter = self._BODY.unpack(body)
        if expires_ms < now * 1000:
            return False
        with self._lock:
            self._advance(now)
            if not self._floor <= counter < self._next:
                return False
            index, bit = divmod(counter - self._floor, 8)
            if index >= len(self._used):
                self._used.extend(bytes(index + 1 - len(self._used)))
            if self._used[index] >> bit & 1:
                return False
            self._used[index] |= 1 << bit
            return True

    def _advance(self, now: float) -> None:
        """Forget the bits of counters that have all expired."""
        while self._groups and self._groups[0][1] < now:
            self._groups.popleft()
        self._move_floor(int(self._groups[0][0]) if self._groups else self._next)

    def _move_floor(self, counter: int) -> None:
        counter -= counter % 8
        if counter > self._floor:
            del self._used[: (counter - self._floor) // 8]
            self._floor = counter


class BrokerError(RuntimeError):
    """The broker could not start (no evidence for itself, port in use, ...)."""


class KeyBroker:
    """Grants keys to attested executor workers. Start with :meth:`start`, end with :meth:`stop`."""

    def __init__(
        self,
        policy: Policy,
        keys: KeySource,
        attester: Attester | None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        verifier: Verifier | None = None,
        audit: AuditLog | None = None,
        unwrapper: Unwrapper | None = None,
        wrapper: Wrapper | None = None,
        nonce_ttl: float = 120.0,
        session_ttl: float = 3600.0,
        max_sessions: int = 4096,
        max_connections: int = 32,
        io_timeout: float = 10.0,
    ) -> None:
        self.policy = policy
        self.keys = keys
        self.attester = attester
        self.host = host
        self._port = port
        self.audit = audit if audit is not None else AuditLog()  # an empty log is falsy
        self.unwrapper = unwrapper or dataset_unwrapper(keys)
        self.wrapper = wrapper or dataset_wrapper(keys)
        self.nonce_ttl = nonce_ttl
        self.session_ttl = session_ttl
        self.max_sessions = max_sessions
        self.max_connections = max_connections
        self.io_timeout = io_timeout
        self._verifier = verifier
        self._lock = threading.Lock()
        self._nonces = _NonceBook(nonce_ttl)
        self._sessions: OrderedDict[bytes, _Session] = OrderedDict()
        self._attestations: deque[Attestation] = deque(maxlen=10000)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._private_key: Any = None
        self.broker_key = b""
        self.driver_quote: bytes | None = None
        self.driver_collateral: str | None = None
        self._sim_collateral: Any = None
        self._sim_fingerprint: str | None = None

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> KeyBroker:
        """Make the session key, quote it from the driver's TEE, and start listening."""
        if self._server is not None:
            return self
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._private_key = ec.generate_private_key(ec.SECP256R1())
        self.broker_key = self._private_key.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        if self.attester is not None:
            from ppml_kernel.tee.base import AttesterError

            try:
                self.driver_quote = self.attester.quote(P.driver_report_data(self.broker_key))
                self.driver_collateral = self.attester.collateral()
            except AttesterError as exc:
                raise BrokerError(f"the driver cannot attest its key broker: {exc}") from None
        self._prepare_verifier()
        try:
            server = _Server((self.host, self._port), _handler_for(self), self)
        except OSError as exc:
            raise BrokerError(
                f"the key broker cannot listen on {self.host}:{self._port}: {exc.strerror}"
            ) from None
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2},
            name="ppml-cluster-key-broker", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and forget every nonce and session (keys stay with their source)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._lock:
            self._nonces = _NonceBook(self.nonce_ttl)  # a new key: no old nonce opens again
            self._sessions.clear()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return self._server.server_address[1]

    @property
    def address(self) -> str:
        """``host:port`` that executors reach the broker at."""
        return f"{self.host}:{self.port}"

    @property
    def fingerprint(self) -> str:
        return P.key_fingerprint(self.broker_key) if self.broker_key else ""

    def __enter__(self) -> KeyBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "listening" if self.running else "stopped"
        return f"<KeyBroker {self.address} {state} id={self.fingerprint[:16]}>"

    # -- verification setup -------------------------------------------------------
    def _prepare_verifier(self) -> None:
        from ppml_kernel.attestation import Verifier
        from ppml_kernel.attestation.collateral import Collateral
        from ppml_kernel.attestation.selfcheck import simulated_anchor_of

        anchor = None
        if self.attester is not None and self.attester.simulated:
            anchor = simulated_anchor_of(self.attester)
            if anchor is not None:
                self._sim_fingerprint = anchor.fingerprint
                text = self.driver_collateral or self.attester.collateral()
                self._sim_collateral = Collateral(text) if text else None
        if self._verifier is None:
            pki_dir = getattr(self.attester, "pki_dir", None)
            self._verifier = Verifier(
                self.policy,
                simulated_anchor=anchor,
                simulated_pki_dir=str(pki_dir) if pki_dir is not None else None,
            )

    def _collateral_for(self, quote: bytes) -> Any:
        """Cached collateral for quotes that chain to the driver's simulated root."""
        if self._sim_collateral is None:
            return None
        from ppml_kernel.attestation.verifier import chain_root_fingerprint

        if chain_root_fingerprint(quote) == self._sim_fingerprint:
            return self._sim_collateral
        return None

    # -- protocol: hello ----------------------------------------------------------
    def hello(self) -> dict[str, object]:
        """A fresh nonce plus the broker key and the driver's evidence for it.

        The broker stores nothing per hello (see :class:`_NonceBook`), so no number of
        unauthenticated hellos can push out a nonce another worker is about to use.
        """
        nonce = self._nonces.issue(time.time())
        return {
            "version": P.VERSION,
            "nonce": P.b64e(nonce),
            "broker_key": P.b64e(self.broker_key),
            "driver_quote": P.b64e(self.driver_quote) if self.driver_quote else None,
            "driver_collateral": self.driver_collateral,
        }

    def _expire(self, now: float) -> None:
        for sid in [s for s, sess in self._sessions.items() if sess.expires < now]:
            del self._sessions[sid]

    def _take_nonce(self, nonce: bytes) -> bool:
        return self._nonces.take(nonce, time.time())

    # -- protocol: attest ---------------------------------------------------------
    def attest(self, body: dict[str, Any], peer: str) -> tuple[int, dict[str, object]]:
        """Verify a worker's quote; on success open a session and grant what it asked."""
        req = _identity(body.get("identity"), peer)
        probe = P.clean_text(body.get("probe") or "", 64)
        nonce = P.b64d(body.get("nonce"), "nonce", size=P.NONCE_SIZE)
        worker_key = P.b64d(body.get("worker_key"), "worker_key", size=P.PUBLIC_KEY_SIZE)
        kek_ids, unwraps = _key_requests(body)
        worker_public = _load_public_key(worker_key)
        if not self._take_nonce(nonce):
            return self._refuse_attest(req, probe, "unknown, used or expired nonce", 0.0)
        quote_b64 = body.get("quote")
        if quote_b64 is None:
            why = P.clean_text(body.get("no_evidence") or "no quote", 300)
            return self._refuse_attest(req, probe, f"not an enclave: {why}", 0.0)
        quote = P.b64d(quote_b64, "quote", max_size=64 * 1024)

        t0 = time.perf_counter()
        expected = P.worker_report_data(self.broker_key, nonce, worker_key)
        assert self._verifier is not None
        result = self._verifier.verify(
            quote, self._collateral_for(quote), expected_report_data=expected
        )
        verify_ms = (time.perf_counter() - t0) * 1e3
        if not result.passed:
            return self._refuse_attest(req, probe, _reason(result), verify_ms, result)

        session = self._open_session(req, nonce, worker_key, worker_public)
        self._record(req, probe, True, result.verdict, "verified and accepted by policy",
                     verify_ms, result)
        grants, refused = self._grant(session, peer, kek_ids, unwraps)
        return 200, {
            "session": P.b64e(session.id),
            "expires": session.expires,
            "executor": req.name,
            "verdict": result.verdict,
            "grants": grants,
            "refused": refused,
        }

    def _open_session(self, req: _Request, nonce: bytes, worker_key: bytes,
                      worker_public: Any) -> _Session:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        sid = secrets.token_bytes(P.SESSION_ID_SIZE)
        shared = self._private_key.exchange(ec.ECDH(), worker_public)
        key = P.session_key(shared, nonce, self.broker_key, worker_key, sid)
        session = _Session(sid, AESGCM(key), req.name, time.time() + self.session_ttl)
        with self._lock:
            self._expire(time.time())
            while len(self._sessions) >= self.max_sessions:
                self._sessions.popitem(last=False)
            self._sessions[sid] = session
        return session

    def _refuse_attest(self, req: _Request, probe: str, reason: str, verify_ms: float,
                       result: VerificationResult | None = None) -> tuple[int, dict[str, object]]:
        verdict = result.verdict if result is not None else "FAILED"
        self._record(req, probe, False, verdict, reason, verify_ms, result)
        return 403, {"error": reason, "executor": req.name, "refused": True, "verdict": verdict}

    def _record(self, req: _Request, probe: str, ok: bool, verdict: str, reason: str,
                verify_ms: float, result: VerificationResult | None) -> None:
        quote = result.quote if result is not None else None
        att = Attestation(
            executor=req.name,
            executor_id=req.executor_id,
            host=req.host,
            peer=req.peer,
            pid=req.pid,
            tee=(quote.tee if quote else req.tee or "none")
            + (" (SIMULATED)" if result is not None and result.simulated else ""),
            ok=ok,
            verdict=verdict,
            reason=reason,
            at=time.time(),
            verify_ms=verify_ms,
            measurement=quote.measurement if quote else "",
            tcb_status=(result.tcb_status or "") if result is not None else "",
            simulated=bool(result is not None and result.simulated),
            probe=probe,
        )
        with self._lock:
            self._attestations.append(att)
        self.audit.record(
            AuditEvent(
                at=att.at,
                event=PROBE if probe else ATTEST,
                executor=req.name,
                peer=req.peer,
                ok=ok,
                reason=reason,
                tee=att.tee,
                measurement=att.measurement,
                tcb_status=att.tcb_status,
                simulated=att.simulated,
            )
        )

    # -- protocol: keys -----------------------------------------------------------
    def keys_for_session(self, body: dict[str, Any], peer: str) -> tuple[int, dict[str, object]]:
        """More keys for an attested worker (sealed to the key it attested with)."""
        sid = P.b64d(body.get("session"), "session", size=P.SESSION_ID_SIZE)
        kek_ids, unwraps = _key_requests(body)
        wraps = _wrap_requests(body)
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and session.expires < time.time():
                del self._sessions[sid]
                session = None
        if session is None:
            self.audit.record(AuditEvent(time.time(), REFUSE, "unknown executor", peer, False,
                                         reason="unknown or expired session; attest again",
                                         key_ids=tuple(kek_ids)))
            return 401, {"error": "unknown or expired session; attest again", "reattest": True}
        # Audited under the identity the session attested with, not a new claim in the body.
        grants, refused = self._grant(session, peer, kek_ids, unwraps, wraps)
        return 200, {"grants": grants, "refused": refused, "executor": session.executor}

    def _grant(self, session: _Session, peer: str, kek_ids: list[str],
               unwraps: list[dict[str, Any]], wraps: list[dict[str, Any]] | None = None
               ) -> tuple[list[dict], list[dict]]:
        grants: list[dict[str, object]] = []
        refused: list[dict[str, object]] = []
        for key_id in kek_ids:
            value = self.keys.get(key_id)
            if value is None:
                refused.append({"kind": P.KIND_KEK, "key_id": key_id,
                                "reason": f"no key with key id {key_id!r} in the driver"})
                continue
            grants.append(_seal(session, P.KIND_KEK, key_id, bytes(value), b""))
        for item in unwraps:
            key_id, wrapped, context, digest = item["key_id"], item["wrapped"], item["context"], \
                item["digest"]
            try:
                data_key = self.unwrapper(key_id, wrapped, context)
            except Exception as exc:  # the dataset layer's errors name the key, not its bytes
                refused.append({"kind": P.KIND_UNWRAP, "key_id": key_id,
                                "reason": _safe_error(exc)})
                continue
            grants.append(_seal(session, P.KIND_UNWRAP, key_id, data_key, digest))
        for item in wraps or []:
            grant, reason = self._wrap_one(session, item)
            if grant is not None:
                grants.append(grant)
            else:
                refused.append({"kind": P.KIND_WRAP, "key_id": item["key_id"], "reason": reason})
        if grants:
            self.audit.record(
                AuditEvent(time.time(), GRANT, session.executor, peer, True,
                           reason=", ".join(sorted({str(g["kind"]) for g in grants})),
                           key_ids=tuple(str(g["key_id"]) for g in grants),
                           session=session.id.hex()[:8])
            )
        for item in refused:
            self.audit.record(
                AuditEvent(time.time(), REFUSE, session.executor, peer, False,
                           reason=str(item["reason"]), key_ids=(str(item["key_id"]),),
                           session=session.id.hex()[:8])
            )
        return grants, refused

    def _wrap_one(self, session: _Session, item: dict[str, Any]) -> tuple[dict | None, str]:
        from cryptography.exceptions import InvalidTag

        key_id, context = item["key_id"], item["context"]
        try:
            data_key = session.aead.decrypt(item["nonce"], item["sealed"],
                                            P.wrap_request_aad(session.id, key_id, context))
        except InvalidTag:
            return None, "the data key to wrap does not authenticate under this session"
        try:
            wrapped = self.wrapper(key_id, data_key, context)
        except Exception as exc:  # the dataset layer's errors name the key, not its bytes
            return None, _safe_error(exc)
        value = P.pack_wrapped(bytes(wrapped.key_check), bytes(wrapped.nonce),
                               bytes(wrapped.ciphertext))
        return _seal(session, P.KIND_WRAP, key_id, value, item["digest"]), ""

    # -- dispatch and reports -----------------------------------------------------
    def dispatch(self, path: str, body: dict[str, Any], peer: str) -> tuple[int, dict[str, object]]:
        """Route one request; protocol errors become 400 answers with the reason."""
        try:
            if path == "/v1/hello":
                return 200, self.hello()
            if path == "/v1/attest":
                return self.attest(body, peer)
            if path == "/v1/keys":
                return self.keys_for_session(body, peer)
            self._malformed(peer, f"no such endpoint {P.clean_text(path, 64)!r}")
            return 404, {"error": f"no such endpoint {P.clean_text(path, 64)!r}"}
        except P.ProtocolError as exc:
            self._malformed(peer, str(exc))
            return 400, {"error": f"malformed request: {exc}"}

    def _malformed(self, peer: str, reason: str) -> None:
        """Audit a request refused before any executor identity was known."""
        self.audit.record(AuditEvent(time.time(), ERROR, "unknown executor", peer, False,
                                     reason=f"malformed request: {P.clean_text(reason, 300)}"))

    def _refused_transport(self, peer: str, reason: str) -> None:
        """Audit a connection refused or dropped (busy, too slow)."""
        self.audit.record(AuditEvent(time.time(), REFUSE, "unknown executor", peer, False,
                                     reason=reason))

    def attestations(self, probe: str | None = None) -> list[Attestation]:
        with self._lock:
            items = list(self._attestations)
        return [a for a in items if probe is None or a.probe == probe]

    def latest_by_executor(self) -> list[Attestation]:
        """The newest verdict for each executor id (or worker name when the id is unknown)."""
        latest: dict[str, Attestation] = {}
        for att in self.attestations():
            latest[att.executor_id or att.executor] = att
        return list(latest.values())

    def status(self) -> BrokerStatus:
        return BrokerStatus(self)


def _seal(session: _Session, kind: str, key_id: str, value: bytes, digest: bytes) -> dict:
    nonce = os.urandom(12)
    sealed = session.aead.encrypt(nonce, value, P.grant_aad(session.id, kind, key_id, digest))
    grant: dict[str, object] = {
        "kind": kind, "key_id": key_id, "nonce": P.b64e(nonce), "sealed": P.b64e(sealed)
    }
    if digest:
        grant["digest"] = P.b64e(digest)
    return grant


def _safe_error(exc: BaseException) -> str:
    """An error for a refusal: our own exception types carry safe messages; others only a name."""
    if isinstance(exc, LookupError):
        return str(exc.args[0]) if exc.args else "not found"
    module = type(exc).__module__
    if module.startswith("ppml_kernel."):
        return P.clean_text(f"{type(exc).__name__}: {exc}", 300)
    return f"{type(exc).__name__} while unwrapping"


def _reason(result: VerificationResult) -> str:
    failed = result.failed_checks
    if not result.error and failed and failed[0].name == "report_data":
        return (
            "the quote does not bind this broker's nonce and the worker's key "
            "(replayed or relayed quote)"
        )
    return result.reason


def _identity(value: object, peer: str) -> _Request:
    data = value if isinstance(value, dict) else {}
    return _Request(
        executor_id=P.clean_text(data.get("executor_id"), 32),
        app_id=P.clean_text(data.get("app_id"), 64),
        host=P.clean_text(data.get("host"), 64),
        pid=P.clean_text(data.get("pid"), 12),
        tee=P.clean_text(data.get("tee"), 32),
        peer=peer,
    )


def _key_requests(body: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    keys = body.get("keys") or []
    unwraps = body.get("unwrap") or []
    if not isinstance(keys, list) or not isinstance(unwraps, list):
        raise P.ProtocolError("'keys' and 'unwrap' must be lists")
    if len(keys) + len(unwraps) > P.MAX_KEYS_PER_REQUEST:
        raise P.ProtocolError(f"at most {P.MAX_KEYS_PER_REQUEST} keys per request")
    kek_ids = list(dict.fromkeys(P.check_key_id(k, f"keys[{i}]") for i, k in enumerate(keys)))
    parsed = []
    for i, item in enumerate(unwraps):
        if not isinstance(item, dict):
            raise P.ProtocolError(f"unwrap[{i}] must be an object")
        key_id = P.check_key_id(item.get("key_id"), f"unwrap[{i}].key_id")
        wrapped = WrappedKeyFields(
            P.b64d(item.get("key_check"), f"unwrap[{i}].key_check", max_size=64),
            P.b64d(item.get("nonce"), f"unwrap[{i}].nonce", max_size=64),
            P.b64d(item.get("ciphertext"), f"unwrap[{i}].ciphertext", max_size=1024),
        )
        context = P.b64d(item.get("context", ""), f"unwrap[{i}].context", max_size=4096)
        digest = P.unwrap_digest(key_id, wrapped.key_check, wrapped.nonce,
                                 wrapped.ciphertext, context)
        parsed.append({"key_id": key_id, "wrapped": wrapped, "context": context,
                       "digest": digest})
    return kek_ids, parsed


def _wrap_requests(body: dict[str, Any]) -> list[dict[str, Any]]:
    items = body.get("wrap") or []
    if not isinstance(items, list) or len(items) > P.MAX_KEYS_PER_REQUEST:
        raise P.ProtocolError(f"'wrap' must be a list of at most {P.MAX_KEYS_PER_REQUEST}")
    parsed = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise P.ProtocolError(f"wrap[{i}] must be an object")
        key_id = P.check_key_id(item.get("key_id"), f"wrap[{i}].key_id")
        nonce = P.b64d(item.get("nonce"), f"wrap[{i}].nonce", size=12)
        sealed = P.b64d(item.get("sealed"), f"wrap[{i}].sealed", max_size=1024)
        context = P.b64d(item.get("context", ""), f"wrap[{i}].context", max_size=4096)
        parsed.append({"key_id": key_id, "nonce": nonce, "sealed": sealed, "context": context,
                       "digest": P.wrap_digest(key_id, nonce, sealed, context)})
    return parsed


def _load_public_key(raw: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise P.ProtocolError("field 'worker_key' is not a P-256 point") from None


class BrokerStatus:
    """The newest verdict per executor, as an HTML table."""

    def __init__(self, broker: KeyBroker) -> None:
        self.address = broker.address
        self.running = broker.running
        self.rows = broker.latest_by_executor()

    def __repr__(self) -> str:
        lines = [f"key broker {self.address} ({'listening' if self.running else 'stopped'})"]
        lines += [attestation_line(a) for a in self.rows] or ["  no executor has attested yet"]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return attestation_table(self.rows, f"Key broker {self.address}")


def attestation_line(a: Attestation) -> str:
    mark = "ok     " if a.ok else "REFUSED"
    return f"  [{mark}] {a.executor}: {a.tee} {a.measurement[:16]} {a.verdict}; {a.reason}"


def attestation_table(rows: list[Attestation], title: str) -> str:
    """Executor, host, TEE, measurement, verdict, time: one row per attestation."""
    from datetime import datetime, timezone

    body = []
    for a in rows:
        colour = "#1e7d32" if a.ok else "#b71c1c"
        when = datetime.fromtimestamp(a.at, timezone.utc).strftime("%H:%M:%S")
        body.append(
            "<tr>"
            f"<td>{escape(a.executor_id or '?')}</td><td>{escape(a.host or a.peer)}</td>"
            f"<td>{escape(a.tee)}</td>"
            f"<td style='font-family:monospace' title='{escape(a.measurement)}'>"
            f"{escape(a.measurement[:16])}{'&hellip;' if a.measurement else '-'}</td>"
            f"<td style='color:{colour};font-weight:bold'>"
            f"{'accepted' if a.ok else 'REFUSED'}</td>"
            f"<td>{escape(a.reason)}</td>"
            f"<td>{escape(when)} UTC, verified in {a.verify_ms:.1f} ms</td></tr>"
        )
    return (
        f"<div class='ppml-attestations'><b>{escape(title)}</b><table>"
        "<tr><th>executor</th><th>host</th><th>TEE</th><th>measurement</th><th>verdict</th>"
        "<th>reason</th><th>time</th></tr>"
        + ("".join(body) or "<tr><td colspan=7>no executor has attested yet</td></tr>")
        + "</table></div>"
    )


# -- transport ----------------------------------------------------------------------

_LENGTH = re.compile(r"[0-9]{1,9}")


@dataclass
class _Conn:
    """One accepted connection: who, and since when it has waited for a whole request."""

    sock: socket.socket
    peer: str
    reading: bool = True
    since: float = field(default_factory=time.monotonic)


class _Server(ThreadingHTTPServer):
    """A threaded HTTP server with a fixed number of connection slots.

    Slow clients cannot hold the slots: each request must arrive whole within the
    broker's ``io_timeout`` (headers and body together, however slowly the bytes
    trickle), and when every slot is taken a new connection takes the slot of the
    connection that has waited longest for its request (if it has waited at least a
    second). Only when every slot is busy with a request being answered, or with a
    connection younger than that, is the newcomer answered 503. Every refusal is audited.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type, broker: KeyBroker) -> None:
        self.broker = broker
        self.max_connections = broker.max_connections
        self.grace = min(1.0, broker.io_timeout / 2)
        self._conns: dict[socket.socket, _Conn] = {}
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        peer = f"{client_address[0]}:{client_address[1]}"
        victim: _Conn | None = None
        with self._conns_lock:
            if len(self._conns) >= self.max_connections:
                victim = self._longest_waiting()
                if victim is not None:
                    del self._conns[victim.sock]
            admitted = len(self._conns) < self.max_connections
            if admitted:
                self._conns[request] = _Conn(request, peer)
        if victim is not None:
            waited = time.monotonic() - victim.since
            self.broker._refused_transport(
                victim.peer, f"connection dropped: no complete request after {waited:.1f} s "
                f"while all {self.max_connections} connection slots were taken"
            )
            with contextlib.suppress(OSError):
                victim.sock.shutdown(socket.SHUT_RDWR)  # its thread sees EOF and ends
        if not admitted:
            self.broker._refused_transport(
                peer, f"busy: all {self.max_connections} connection slots are answering requests"
            )
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def _longest_waiting(self) -> _Conn | None:
        now = time.monotonic()
        waiting = [c for c in self._conns.values() if c.reading and now - c.since >= self.grace]
        return min(waiting, key=lambda c: c.since) if waiting else None

    def admitted(self, request: Any) -> bool:
        """False once the connection's slot was given to another (it is being closed)."""
        with self._conns_lock:
            return request in self._conns

    def mark(self, request: Any, reading: bool) -> None:
        """A request is now being waited for (``reading``) or answered."""
        with self._conns_lock:
            conn = self._conns.get(request)
            if conn is not None:
                conn.reading = reading
                conn.since = time.monotonic()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conns_lock:
                self._conns.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Never print tracebacks to the kernel's stderr; the handler already answered."""


class _DeadlineReader(io.RawIOBase):
    """Socket reads that share one deadline per request (a per-read timeout would let a
    client that sends one byte every few seconds hold its connection for ever)."""

    def __init__(self, sock: socket.socket, handler: Any) -> None:
        super().__init__()
        self._sock = sock
        self._handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:  # type: ignore[override]
        left = self._handler.deadline - time.monotonic()
        if left <= 0:
            raise self._handler.timed_out()
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            raise self._handler.timed_out() from None


def _handler_for(broker: KeyBroker) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "ppml-key-broker/1"
        sys_version = ""
        timeout = broker.io_timeout
        disable_nagle_algorithm = True  # headers and body in separate writes: no 40 ms stall
        server: _Server
        deadline = 0.0

        def setup(self) -> None:
            super().setup()
            self.peer = f"{self.client_address[0]}:{self.client_address[1]}"
            self.rfile.close()  # the plain socket reader; reads go through the deadline
            self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))

        def handle_one_request(self) -> None:
            """One request, which must arrive whole within ``io_timeout`` from now."""
            self.deadline = time.monotonic() + broker.io_timeout
            self.server.mark(self.request, reading=True)
            super().handle_one_request()

        def timed_out(self) -> TimeoutError:
            if self.server.admitted(self.request):  # a dropped one was audited when dropped
                broker._refused_transport(
                    self.peer, f"connection dropped: no complete request within "
                    f"{broker.io_timeout:g} s"
                )
            return TimeoutError("request not complete in time")

        def log_message(self, format: str, *args: Any) -> None:
            """Requests are audited by the broker; no access log on stderr."""

        def send_error(self, code: int, message: str | None = None,
                       explain: str | None = None) -> None:
            """The http.server's own refusals (bad request line, headers, method) are audited."""
            self.close_connection = True
            if not self.server.admitted(self.request):
                return  # its slot was given away mid-request: audited then, nothing to say
            reason = P.clean_text(message or self.responses.get(code, ("",))[0], 120)
            broker._malformed(self.peer, f"HTTP {code}: {reason}")
            self.request_version = "HTTP/1.1"  # answer with a status line, even to junk
            self._send(code, {"error": f"malformed request: {reason}"})

        def _refuse(self, status: int, reason: str, *, close: bool = False) -> None:
            broker._malformed(self.peer, f"{reason} ({self.command} {self._path()})")
            if close:
                self.close_connection = True
            self._send(status, {"error": f"malformed request: {reason}"})

        def _path(self) -> str:
            return P.clean_text(getattr(self, "path", ""), 64)

        def _send(self, status: int, payload: dict[str, object]) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.connection.settimeout(broker.io_timeout)  # writes get a fresh budget
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self.server.mark(self.request, reading=False)
            if self.path == "/v1/health":
                self._send(200, {"ok": True, "version": P.VERSION})
            else:
                self._refuse(405, "use POST")

        def _length(self) -> int | None:
            """The body's length, or None after answering why the request is refused."""
            if self.headers.get("Transfer-Encoding") is not None:
                self._refuse(411, "Transfer-Encoding is not accepted; send Content-Length",
                             close=True)
                return None
            values = self.headers.get_all("Content-Length") or []
            if not values:
                self._refuse(411, "Content-Length required", close=True)
                return None
            if len(values) > 1 or not _LENGTH.fullmatch(values[0].strip()):
                self._refuse(400, "Content-Length must be one non-negative decimal integer",
                             close=True)
                return None
            length = int(values[0])
            if length > P.MAX_REQUEST_BYTES:
                self._refuse(413, f"request larger than {P.MAX_REQUEST_BYTES} bytes", close=True)
                return None
            return length

        def do_POST(self) -> None:
            length = self._length()
            if length is None:
                return
            raw = self.rfile.read(length)
            if len(raw) != length:
                self.close_connection = True
                if self.server.admitted(self.request):
                    broker._malformed(self.peer, f"connection closed after {len(raw)} of "
                                      f"{length} body bytes ({self._path()})")
                return
            self.server.mark(self.request, reading=False)
            try:
                body = json.loads(raw) if raw else {}
            except (ValueError, UnicodeDecodeError):
                self._refuse(400, "body is not JSON")
                return
            if not isinstance(body, dict):
                self._refuse(400, "body must be a JSON object")
                return
            try:
                status, payload = broker.dispatch(self.path, body, self.peer)
            except Exception as exc:  # keep serving; say what kind of failure, not its data
                broker.audit.record(
                    AuditEvent(time.time(), ERROR, "unknown executor", self.peer, False,
                               reason=f"internal error: {type(exc).__name__}")
                )
                status, payload = 500, {"error": f"internal error ({type(exc).__name__})"}
            self._send(status, payload)

    return Handler
