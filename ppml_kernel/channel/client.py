"""The browser side of ``ppml-attest/1`` in Python.

The reference implementation the TypeScript extension is checked against, and a client
for headless tools and tests. It verifies the quote with the attestation layer's
:class:`~ppml_kernel.attestation.Verifier` (dcap-qvl plus a :class:`Policy`: the one
verification path of this package), checks that REPORT_DATA binds this handshake,
derives the keys and speaks sealed frames. The order is the extension's: signature
chain, then binding, then policy.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from ppml_kernel.channel import crypto, frames, protocol
from ppml_kernel.channel.protocol import ProtocolError

if TYPE_CHECKING:
    from ppml_kernel.attestation import VerificationResult, Verifier

_VERIFIED_STAGES = ("policy", "done")  # the quote's signatures checked out


def intel_root_der() -> bytes:
    """Intel's SGX Root CA (the attestation layer's pinned copy)."""
    from ppml_kernel.attestation.anchors import intel_root

    return intel_root().der


def verifier_for_root(root_der: bytes | None = None) -> Verifier:
    """The browser's trust: Intel's root, plus ``root_der`` if the user allowed it.

    A root other than Intel's is a simulated one (the extension asks the user before
    trusting it), so the policy allows simulation only when such a root is given.
    """
    from ppml_kernel.attestation import Policy, TrustAnchor, Verifier

    if root_der is None or root_der == intel_root_der():
        return Verifier(Policy())
    anchor = TrustAnchor("root allowed in the browser", root_der, simulated=True)
    return Verifier(Policy(allow_simulated=True), simulated_anchor=anchor)


def browser_verdict(result: VerificationResult) -> dict[str, Any]:
    """What the browser tells the kernel in ``finished`` (public facts, no keys)."""
    assert result.quote is not None
    return {
        "status": result.tcb_status,
        "advisory_ids": list(result.advisory_ids),
        "tee": result.quote.tee,
        # "Simulated" is decided by the anchor that verified, never by the quote.
        "simulated": result.simulated,
    }


def _evidence_fields(evidence: object) -> tuple[bytes, bytes, str | None]:
    """(enclave_pub, quote, collateral) of an ``evidence`` message, validated."""
    protocol.require_type(evidence, protocol.EVIDENCE)
    assert isinstance(evidence, dict)
    enclave_pub = protocol.b64decode(
        evidence.get("enclave_pub"), "enclave_pub", crypto.PUBLIC_KEY_SIZE
    )
    quote = protocol.b64decode(evidence.get("quote"), "quote")
    collateral = evidence.get("collateral")
    return enclave_pub, quote, collateral if isinstance(collateral, str) else None


class BrowserClient:
    """One client session: ``hello()`` -> ``accept(evidence, verifier)`` -> sealed frames."""

    def __init__(self, private_key: Any = None, nonce: bytes | None = None) -> None:
        self._key = private_key if private_key is not None else crypto.generate_key()
        self.nonce = nonce if nonce is not None else os.urandom(crypto.NONCE_SIZE)
        self.browser_pub = crypto.public_bytes(self._key)
        self.keys: crypto.SessionKeys | None = None
        self.verdict: dict[str, Any] = {}
        self.result: VerificationResult | None = None
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

    def accept(
        self, evidence: object, verifier: Verifier, *, at: int | None = None
    ) -> dict[str, Any]:
        """Verify the evidence at ``at`` (default now); return the sealed ``finished``.

        Raises :class:`ProtocolError`: ``collateral`` (none sent), ``verify`` (the quote
        does not verify against a trusted root), ``binding`` (REPORT_DATA is not this
        handshake's) or ``policy`` (verified, but the policy rejects it).
        """
        enclave_pub, quote, collateral = _evidence_fields(evidence)
        if collateral is None:
            raise ProtocolError("collateral", "the kernel sent no collateral")
        result = verifier.verify(quote, collateral, at=at)
        self.result = result
        if result.quote is None or result.stage not in _VERIFIED_STAGES:
            raise ProtocolError("verify", result.reason)
        report_data = bytes.fromhex(result.quote.report_data)
        self._check_binding(enclave_pub, report_data)
        if not result.passed:
            raise ProtocolError("policy", result.reason)
        return self.bind(evidence, report_data, browser_verdict(result))

    def bind(
        self, evidence: object, report_data: bytes, verdict: dict[str, Any]
    ) -> dict[str, Any]:
        """Finish a handshake whose quote was verified: check the binding, derive keys.

        ``report_data`` is the verified quote's REPORT_DATA; ``verdict`` goes to the
        kernel in the sealed ``finished`` (tools that pin test vectors call this directly).
        """
        enclave_pub, quote, _ = _evidence_fields(evidence)
        self._check_binding(enclave_pub, report_data)
        th = crypto.transcript_hash(self.nonce, self.browser_pub, enclave_pub, quote)
        self.keys = crypto.derive_session_keys(crypto.ecdh(self._key, enclave_pub), th)
        self.verdict = dict(verdict)
        return self.seal({"type": protocol.FINISHED, "verdict": self.verdict})

    def _check_binding(self, enclave_pub: bytes, report_data: bytes) -> None:
        if report_data != crypto.report_data(self.nonce, self.browser_pub, enclave_pub):
            raise ProtocolError(
                "binding", "the quote's REPORT_DATA does not bind this handshake (replayed quote?)"
            )

    def seal(self, inner: dict[str, Any]) -> dict[str, Any]:
        assert self.keys is not None, "handshake not done"
        with self._lock:
            msg = frames.seal_frame(self.keys, crypto.DIR_B2K, self._send_seq, inner)
            self._send_seq += 1
        return msg

    def open(self, msg: object) -> dict[str, Any]:
        assert self.keys is not None, "handshake not done"
        seq, ct = protocol.parse_sealed(msg)
        with self._lock:
            if seq != self._recv_seq:
                code = "replay" if seq < self._recv_seq else "reorder"
                raise ProtocolError(code, f"frame {seq} (expected {self._recv_seq})")
            plaintext = frames.open_frame(self.keys, crypto.DIR_K2B, seq, ct)
            self._recv_seq += 1
        return protocol.decode_inner(plaintext, protocol.K2B_INNER)
