"""One browser <-> enclave session on the kernel side: handshake, owner proof, sealed frames.

A session is created by a ``hello``; it answers with evidence (a fresh quote bound to
this handshake, the browser's owner key and the kernel's current owners) and derives
the session keys. The browser then proves it holds the same keys *and* its owner key
with a sealed ``finished`` (seq 0); only an owner's session becomes ready.

Every stream's receive sequence numbers must arrive exactly in order: a replayed,
reordered, dropped-then-resent or cross-session frame is rejected. A rejected frame
changes no state, also when it decrypts but fails validation afterwards: the sequence
number is consumed only once every check passed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ppml_kernel.channel import crypto, frames, protocol
from ppml_kernel.channel.owners import OwnerRegistry
from ppml_kernel.channel.protocol import ProtocolError
from ppml_kernel.tee.base import Attester

CollateralProvider = Callable[[bytes], "str | None"]
T = TypeVar("T")

AWAITING_FINISH = "awaiting_finish"
READY = "ready"
CLOSED = "closed"


class ServerSession:
    """Kernel side of one ``ppml-attest/2`` session (thread-safe)."""

    def __init__(self, ref: str, owners: OwnerRegistry | None = None) -> None:
        self.ref = ref  # transport name (the comm id)
        self.owners = owners if owners is not None else OwnerRegistry()
        self.state = "new"
        self.created = time.time()
        self.verdict: dict[str, Any] = {}  # what the browser said it saw: display only
        self.abort_reason: str | None = None
        self.timings: dict[str, float] = {}
        self.owner_pub = b""
        self.claimed = False
        self._digest_at_evidence = crypto.NO_OWNER
        self._keys: crypto.SessionKeys | None = None
        self._send_seq: dict[int, int] = {}
        self._recv_seq: dict[int, int] = {}
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """An owner confirmed the keys: secrets and sealed requests may flow."""
        return self.state == READY

    @property
    def session_id(self) -> str:
        return self._keys.session_id.hex() if self._keys else ""

    @property
    def owner_fingerprint(self) -> str:
        return crypto.owner_fingerprint(self.owner_pub) if self.owner_pub else ""

    def handshake(
        self,
        hello: object,
        attester: Attester,
        collateral_provider: CollateralProvider | None = None,
        kernel_info: dict[str, Any] | None = None,
        enclave_key: Any = None,
    ) -> dict[str, Any]:
        """Answer a ``hello`` with evidence; derive this session's keys.

        ``enclave_key`` is for test vectors only: production always makes a fresh key.
        """
        t0 = time.perf_counter()
        nonce, browser_pub, owner_pub = protocol.parse_hello(hello)
        try:
            crypto.check_public_key(browser_pub, "browser_pub")
            crypto.check_public_key(owner_pub, "owner_pub")
        except crypto.ChannelCryptoError as exc:
            raise ProtocolError("malformed", str(exc)) from None
        owners = self.owners.keys()
        digest = crypto.owners_digest(owners)
        key = enclave_key if enclave_key is not None else crypto.generate_key()
        enclave_pub = crypto.public_bytes(key)
        rd = crypto.report_data(nonce, browser_pub, enclave_pub, owner_pub, digest)
        t1 = time.perf_counter()
        quote = attester.quote(rd)
        t2 = time.perf_counter()
        collateral = attester.collateral()
        collateral_error = None
        if collateral is None and collateral_provider is not None:
            try:
                collateral = collateral_provider(quote)
            # boundary: the collateral provider is a callback (PCCS over the network);
            # the browser shows the reason and the session stays usable
            except Exception as exc:
                collateral_error = f"{type(exc).__name__}: {exc}"
        t3 = time.perf_counter()
        th = crypto.transcript_hash(nonce, browser_pub, enclave_pub, owner_pub, digest, quote)
        keys = crypto.derive_session_keys(crypto.ecdh(key, browser_pub), th)
        t4 = time.perf_counter()
        with self._lock:
            self._keys = keys
            self.owner_pub = owner_pub
            self._digest_at_evidence = digest
            self.state = AWAITING_FINISH
            self._send_seq = {}
            self._recv_seq = {}
        self.timings = {
            "quote_ms": round((t2 - t1) * 1000, 3),
            "collateral_ms": round((t3 - t2) * 1000, 3),
            "handshake_ms": round(((t1 - t0) + (t4 - t3)) * 1000, 3),
        }
        tee = attester.describe()
        msg = protocol.evidence_message(
            enclave_pub, owners, quote, collateral, tee, kernel_info or {}, self.timings
        )
        if collateral_error:
            msg["collateral_error"] = collateral_error
        return msg

    # ------------------------------------------------------------- receiving
    def _check_seq(self, stream: int, seq: int) -> None:
        """Caller holds the lock. Raise unless ``seq`` is the next one on ``stream``."""
        if self._keys is None or self.state == CLOSED:
            raise ProtocolError("state", "no attested session for this frame")
        if stream != crypto.DIR_B2K and self.state != READY:
            raise ProtocolError("state", "the session is not verified by an owner yet")
        expected = self._recv_seq.get(stream, 0)
        if seq < expected:
            raise ProtocolError("replay", f"frame {seq} was already received (expected {expected})")
        if seq > expected:
            raise ProtocolError(
                "reorder", f"frame {seq} arrived out of order (expected {expected})"
            )

    def open(self, msg: object) -> dict[str, Any]:
        """Authenticate, decrypt and fully validate an attestation frame; return the inner message.

        Raises :class:`ProtocolError` (code ``state``, ``replay``, ``reorder``,
        ``decrypt``, ``malformed``, ``unexpected`` or ``not_owner``); on any error
        nothing changes.
        """
        seq, ct = protocol.parse_sealed(msg)
        with self._lock:
            self._check_seq(crypto.DIR_B2K, seq)
            assert self._keys is not None
            plaintext = frames.open_frame(self._keys, crypto.DIR_B2K, seq, ct)
            allowed = (
                frozenset({protocol.FINISHED})
                if self.state == AWAITING_FINISH
                else protocol.B2K_INNER - {protocol.FINISHED}
            )
            inner = protocol.decode_inner(plaintext, allowed)
            protocol.validate_inner(inner)
            if inner["type"] == protocol.FINISHED:
                verdict, sig = protocol.parse_finished(inner)
                try:
                    crypto.verify_owner_proof(self.owner_pub, sig, self._keys.transcript_hash)
                except crypto.ChannelCryptoError as exc:
                    raise ProtocolError("not_owner", str(exc)) from None
                # The last check; it is also the one that may change the owners.
                self.claimed = self.owners.authorize(self.owner_pub, self._digest_at_evidence)
                self.verdict = verdict
                self.state = READY
            self._recv_seq[crypto.DIR_B2K] = seq + 1
            return inner

    def open_stream(
        self, stream: int, seq: int, ciphertext: bytes, validate: Callable[[bytes], T]
    ) -> T:
        """Open a sealed notebook message on ``stream``; ``validate`` parses and checks it.

        The sequence number is consumed only if decryption *and* ``validate`` succeed.
        """
        if stream not in (crypto.DIR_B2K_SHELL, crypto.DIR_B2K_STDIN):
            raise ProtocolError("malformed", "not a browser -> kernel stream")
        with self._lock:
            self._check_seq(stream, seq)
            assert self._keys is not None
            plaintext = frames.open_raw(self._keys, stream, seq, ciphertext)
            result = validate(plaintext)
            self._recv_seq[stream] = seq + 1
            return result

    # ------------------------------------------------------------- sending
    def seal(self, inner: dict[str, Any]) -> dict[str, Any]:
        """Seal an attestation message to the browser with the next sequence number."""
        with self._lock:
            if self._keys is None or self.state == CLOSED:
                raise ProtocolError("state", "session is not established")
            seq = self._send_seq.get(crypto.DIR_K2B, 0)
            msg = frames.seal_frame(self._keys, crypto.DIR_K2B, seq, inner)
            self._send_seq[crypto.DIR_K2B] = seq + 1
        return msg

    def seal_stream(
        self, stream: int, plaintext: bytes, then: Callable[[int, bytes], None] | None = None
    ) -> tuple[int, bytes]:
        """Seal a notebook message on ``stream``; return (seq, ciphertext).

        ``then(seq, ct)`` runs under the session's lock, so messages leave in the order
        of their sequence numbers when the caller hands them to a FIFO there.
        """
        with self._lock:
            if self._keys is None or self.state != READY:
                raise ProtocolError("state", "session is not ready")
            seq = self._send_seq.get(stream, 0)
            ct = crypto.seal(
                self._keys.streams[stream], self._keys.session_id, stream, seq, plaintext
            )
            self._send_seq[stream] = seq + 1
            if then is not None:
                then(seq, ct)
        return seq, ct

    def close(self) -> None:
        with self._lock:
            self.state = CLOSED
            self._keys = None

    def describe(self) -> dict[str, Any]:
        """Public facts for ``%ppml status`` (no keys)."""
        return {
            "ref": self.ref,
            "session_id": self.session_id,
            "state": self.state,
            "created": self.created,
            "owner": self.owner_fingerprint,
            "claimed": self.claimed,
            "verdict": self.verdict,
            "abort_reason": self.abort_reason,
            "timings": self.timings,
        }
