"""One browser <-> enclave session on the kernel side: handshake, then sealed frames.

A session is created by a ``hello``; it answers with evidence (a fresh quote bound to
this handshake) and derives the session keys. The browser then proves it holds the
same keys with a sealed ``finished`` (seq 0), and the kernel answers ``ready``.
Receive sequence numbers must arrive exactly in order: a replayed, reordered,
dropped-then-resent or cross-session frame is rejected without changing any state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ppml_kernel.channel import crypto, frames, protocol
from ppml_kernel.channel.protocol import ProtocolError
from ppml_kernel.tee.base import Attester

CollateralProvider = Callable[[bytes], "str | None"]

AWAITING_FINISH = "awaiting_finish"
READY = "ready"
CLOSED = "closed"


class ServerSession:
    """Kernel side of one ``ppml-attest/1`` session (thread-safe)."""

    def __init__(self, ref: str) -> None:
        self.ref = ref  # transport name (the comm id)
        self.state = "new"
        self.created = time.time()
        self.verdict: dict[str, Any] = {}
        self.abort_reason: str | None = None
        self.timings: dict[str, float] = {}
        self._keys: crypto.SessionKeys | None = None
        self._send_seq = 0
        self._recv_seq = 0
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """The browser confirmed the keys: secrets may be sent."""
        return self.state == READY

    @property
    def session_id(self) -> str:
        return self._keys.session_id.hex() if self._keys else ""

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
        nonce, browser_pub = protocol.parse_hello(hello)
        try:
            crypto.check_public_key(browser_pub, "browser_pub")
        except crypto.ChannelCryptoError as exc:
            raise ProtocolError("malformed", str(exc)) from None
        key = enclave_key if enclave_key is not None else crypto.generate_key()
        enclave_pub = crypto.public_bytes(key)
        rd = crypto.report_data(nonce, browser_pub, enclave_pub)
        t1 = time.perf_counter()
        quote = attester.quote(rd)
        t2 = time.perf_counter()
        collateral = attester.collateral()
        collateral_error = None
        if collateral is None and collateral_provider is not None:
            try:
                collateral = collateral_provider(quote)
            except Exception as exc:  # the browser shows the reason; the session stays usable
                collateral_error = f"{type(exc).__name__}: {exc}"
        t3 = time.perf_counter()
        th = crypto.transcript_hash(nonce, browser_pub, enclave_pub, quote)
        keys = crypto.derive_session_keys(crypto.ecdh(key, browser_pub), th)
        t4 = time.perf_counter()
        with self._lock:
            self._keys = keys
            self.state = AWAITING_FINISH
            self._send_seq = 0
            self._recv_seq = 0
        self.timings = {
            "quote_ms": round((t2 - t1) * 1000, 3),
            "collateral_ms": round((t3 - t2) * 1000, 3),
            "handshake_ms": round(((t1 - t0) + (t4 - t3)) * 1000, 3),
        }
        tee = attester.describe()
        msg = protocol.evidence_message(
            enclave_pub, quote, collateral, tee, kernel_info or {}, self.timings
        )
        if collateral_error:
            msg["collateral_error"] = collateral_error
        return msg

    def open(self, msg: object) -> dict[str, Any]:
        """Authenticate and decrypt a sealed frame; return the inner message.

        Raises :class:`ProtocolError` (code ``state``, ``replay``, ``reorder``,
        ``decrypt`` or ``malformed``); on any error nothing changes.
        """
        seq, ct = protocol.parse_sealed(msg)
        with self._lock:
            if self._keys is None or self.state == CLOSED:
                raise ProtocolError("state", "no attested session for this frame")
            if seq < self._recv_seq:
                raise ProtocolError(
                    "replay", f"frame {seq} was already received (expected {self._recv_seq})"
                )
            if seq > self._recv_seq:
                raise ProtocolError(
                    "reorder", f"frame {seq} arrived out of order (expected {self._recv_seq})"
                )
            plaintext = frames.open_frame(self._keys, crypto.DIR_B2K, seq, ct)
            allowed = (
                frozenset({protocol.FINISHED})
                if self.state == AWAITING_FINISH
                else protocol.B2K_INNER - {protocol.FINISHED}
            )
            inner = protocol.decode_inner(plaintext, allowed)
            self._recv_seq += 1
            if inner["type"] == protocol.FINISHED:
                verdict = inner.get("verdict")
                self.verdict = verdict if isinstance(verdict, dict) else {}
                self.state = READY
            return inner

    def seal(self, inner: dict[str, Any]) -> dict[str, Any]:
        """Seal an inner message to the browser with the next sequence number."""
        with self._lock:
            if self._keys is None or self.state == CLOSED:
                raise ProtocolError("state", "session is not established")
            msg = frames.seal_frame(self._keys, crypto.DIR_K2B, self._send_seq, inner)
            self._send_seq += 1
        return msg

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
            "verdict": self.verdict,
            "abort_reason": self.abort_reason,
            "timings": self.timings,
        }
