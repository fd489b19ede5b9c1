"""The browser side of ``ppml-attest/1`` in Python.

The reference implementation the TypeScript extension is checked against, and a client
for headless tools and tests. It verifies the quote (dcap-qvl by default), checks that
REPORT_DATA binds this handshake, derives the keys and speaks sealed frames.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from ppml_kernel.channel import crypto, protocol
from ppml_kernel.channel.protocol import ProtocolError

Verifier = Callable[[bytes, "str | None"], dict[str, Any]]


def intel_root_der() -> bytes:
    """Intel's SGX Root CA (the attestation layer's pinned copy)."""
    from ppml_kernel.attestation.anchors import intel_root

    return intel_root().der


def dcap_qvl_verifier(root_der: bytes | None, now: int | None = None) -> Verifier:
    """A verifier using dcap-qvl with Intel's root (``root_der=None``) or an explicit one."""

    def verify(quote: bytes, collateral: str | None) -> dict[str, Any]:
        import time

        import dcap_qvl

        if collateral is None:
            raise ProtocolError("collateral", "the kernel sent no collateral")
        col = dcap_qvl.QuoteCollateralV3.from_json(collateral)
        at = int(time.time()) if now is None else now
        if root_der is None:
            result = dcap_qvl.verify(quote, col, at)
        else:
            result = dcap_qvl.verify_with_root_ca(quote, col, root_der, at)
        q = dcap_qvl.parse_quote(quote)
        return {
            "status": result.status,
            "advisory_ids": list(result.advisory_ids),
            "tee": "TDX" if q.header.tee_type == 0x81 else "SGX",
            # "Simulated" is decided by the anchor that verified, never by the quote.
            "simulated": root_der is not None and root_der != intel_root_der(),
            "report_data": bytes(q.report.report_data),
        }

    return verify


class BrowserClient:
    """One client session: ``hello()`` -> ``accept(evidence)`` -> sealed frames."""

    def __init__(self, private_key: Any = None, nonce: bytes | None = None) -> None:
        self._key = private_key if private_key is not None else crypto.generate_key()
        self.nonce = nonce if nonce is not None else os.urandom(crypto.NONCE_SIZE)
        self.browser_pub = crypto.public_bytes(self._key)
        self.keys: crypto.SessionKeys | None = None
        self.verdict: dict[str, Any] = {}
        self._send_seq = 0
        self._recv_seq = 0
        self._lock = threading.Lock()

    def hello(self) -> dict[str, Any]:
        return {
            "type": protocol.HELLO,
            "protocol": crypto.PROTOCOL,
            "nonce": protocol.b64encode(self.nonce),
            "browser_pub": protocol.b64encode(self.browser_pub),
        }

    def accept(self, evidence: object, verify: Verifier) -> dict[str, Any]:
        """Verify the evidence; on success derive keys and return the sealed ``finished``."""
        protocol.require_type(evidence, protocol.EVIDENCE)
        assert isinstance(evidence, dict)
        enclave_pub = protocol.b64decode(
            evidence.get("enclave_pub"), "enclave_pub", crypto.PUBLIC_KEY_SIZE
        )
        quote = protocol.b64decode(evidence.get("quote"), "quote")
        collateral = evidence.get("collateral")
        verdict = verify(quote, collateral if isinstance(collateral, str) else None)
        expected = crypto.report_data(self.nonce, self.browser_pub, enclave_pub)
        if verdict.get("report_data") != expected:
            raise ProtocolError(
                "binding", "the quote's REPORT_DATA does not bind this handshake (replayed quote?)"
            )
        th = crypto.transcript_hash(self.nonce, self.browser_pub, enclave_pub, quote)
        self.keys = crypto.derive_session_keys(crypto.ecdh(self._key, enclave_pub), th)
        self.verdict = {k: v for k, v in verdict.items() if k != "report_data"}
        return self.seal({"type": protocol.FINISHED, "verdict": self.verdict})

    def seal(self, inner: dict[str, Any]) -> dict[str, Any]:
        assert self.keys is not None, "handshake not done"
        with self._lock:
            seq = self._send_seq
            ct = crypto.seal(
                self.keys.b2k,
                self.keys.session_id,
                crypto.DIR_B2K,
                seq,
                protocol.encode_inner(inner),
            )
            self._send_seq += 1
        return protocol.sealed_message(seq, ct)

    def open(self, msg: object) -> dict[str, Any]:
        assert self.keys is not None, "handshake not done"
        seq, ct = protocol.parse_sealed(msg)
        with self._lock:
            if seq != self._recv_seq:
                code = "replay" if seq < self._recv_seq else "reorder"
                raise ProtocolError(code, f"frame {seq} (expected {self._recv_seq})")
            try:
                plaintext = crypto.open_frame(
                    self.keys.k2b, self.keys.session_id, crypto.DIR_K2B, seq, ct
                )
            except crypto.ChannelCryptoError as exc:
                raise ProtocolError("decrypt", str(exc)) from None
            self._recv_seq += 1
        return protocol.decode_inner(plaintext, protocol.K2B_INNER)
