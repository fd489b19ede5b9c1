"""The attested key broker: executors get a key only after their quote passes policy.

The driver runs it (see :mod:`ppml_kernel.keys.broker.protocol` for the messages). It
authenticates executors by attestation alone: a fresh single-use nonce, a quote
binding that nonce and the worker's ephemeral public key, dcap-qvl verification and
the cluster :class:`~ppml_kernel.attestation.Policy` (measurement allow-list, TCB
status, simulation only when allowed). Keys leave it only sealed to the attested
worker's key (ECDH + HKDF + AES-GCM from :mod:`ppml_kernel.crypto`). What is granted,
and the audit of it, is :mod:`~ppml_kernel.keys.broker.core`; the HTTP server is
:mod:`~ppml_kernel.keys.broker.http`; tables for notebooks are ``ppml_kernel.spark.display``.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from ppml_kernel import crypto
from ppml_kernel.keys.broker import protocol as P
from ppml_kernel.keys.broker.audit import ATTEST, ERROR, PROBE, REFUSE, AuditEvent, AuditLog
from ppml_kernel.keys.broker.core import KeyGrants, KeySource, Unwrapper, Wrapper
from ppml_kernel.keys.broker.sessions import (
    Attestation,
    NonceBook,
    Session,
    WorkerClaim,
    worker_claim,
)
from ppml_kernel.keys.errors import DatasetKeyError

if TYPE_CHECKING:
    from ppml_kernel.attestation import Policy, VerificationResult, Verifier
    from ppml_kernel.keys.broker.http import Server
    from ppml_kernel.tee.base import Attester


class BrokerError(DatasetKeyError, RuntimeError):
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
        self.grants = KeyGrants(keys, self.audit, unwrapper=unwrapper, wrapper=wrapper)
        self.nonce_ttl = nonce_ttl
        self.session_ttl = session_ttl
        self.max_sessions = max_sessions
        self.max_connections = max_connections
        self.io_timeout = io_timeout
        self._verifier = verifier
        self._lock = threading.Lock()
        self._nonces = NonceBook(nonce_ttl)
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()
        self._attestations: deque[Attestation] = deque(maxlen=10000)
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._private_key: crypto.PrivateKey | None = None
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
        from ppml_kernel.keys.broker.http import Server, handler_for

        self._private_key = crypto.generate_key()
        self.broker_key = crypto.public_bytes(self._private_key)
        if self.attester is not None:
            from ppml_kernel.tee.base import AttesterError

            try:
                self.driver_quote = self.attester.quote(P.driver_report_data(self.broker_key))
                self.driver_collateral = self.attester.collateral()
            except AttesterError as exc:
                raise BrokerError(f"the driver cannot attest its key broker: {exc}") from None
        self._prepare_verifier()
        try:
            server = Server((self.host, self._port), handler_for(self), self)
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
            self._nonces = NonceBook(self.nonce_ttl)  # a new key: no old nonce opens again
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

        The broker stores nothing per hello (see :class:`NonceBook`), so no number of
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
        req = worker_claim(body.get("identity"), peer)
        probe = P.clean_text(body.get("probe") or "", 64)
        nonce = P.b64d(body.get("nonce"), "nonce", size=P.NONCE_SIZE)
        worker_key = P.b64d(body.get("worker_key"), "worker_key", size=P.PUBLIC_KEY_SIZE)
        kek_ids, unwraps = P.parse_key_requests(body)
        worker_public = P.load_public_key(worker_key)
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
        grants, refused = self.grants.grant(session, peer, kek_ids, unwraps)
        return 200, {
            "session": P.b64e(session.id),
            "expires": session.expires,
            "executor": req.name,
            "verdict": result.verdict,
            "grants": grants,
            "refused": refused,
        }

    def _open_session(self, req: WorkerClaim, nonce: bytes, worker_key: bytes,
                      worker_public: crypto.PublicKey) -> Session:
        sid = secrets.token_bytes(P.SESSION_ID_SIZE)
        assert self._private_key is not None
        shared = crypto.ecdh(self._private_key, worker_public)
        key = P.session_key(shared, nonce, self.broker_key, worker_key, sid)
        session = Session(sid, crypto.aead(key), req.name, time.time() + self.session_ttl)
        with self._lock:
            self._expire(time.time())
            while len(self._sessions) >= self.max_sessions:
                self._sessions.popitem(last=False)
            self._sessions[sid] = session
        return session

    def _refuse_attest(self, req: WorkerClaim, probe: str, reason: str, verify_ms: float,
                       result: VerificationResult | None = None) -> tuple[int, dict[str, object]]:
        verdict = result.verdict if result is not None else "FAILED"
        self._record(req, probe, False, verdict, reason, verify_ms, result)
        return 403, {"error": reason, "executor": req.name, "refused": True, "verdict": verdict}

    def _record(self, req: WorkerClaim, probe: str, ok: bool, verdict: str, reason: str,
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
        kek_ids, unwraps = P.parse_key_requests(body)
        wraps = P.parse_wrap_requests(body)
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
        grants, refused = self.grants.grant(session, peer, kek_ids, unwraps, wraps)
        return 200, {"grants": grants, "refused": refused, "executor": session.executor}

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





def _reason(result: VerificationResult) -> str:
    failed = result.failed_checks
    if not result.error and failed and failed[0].name == "report_data":
        return (
            "the quote does not bind this broker's nonce and the worker's key "
            "(replayed or relayed quote)"
        )
    return result.reason
