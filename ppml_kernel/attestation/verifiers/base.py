"""The one small interface every evidence kind implements, and the evidence it takes.

As in Confidential Containers Trustee's verifier (one module per TEE behind one small
trait), each kind turns evidence into a typed :class:`VerificationResult` (the claims,
the policy checks and the verdict). Choosing the kind is :class:`~ppml_kernel.attestation.
Verifier`'s job; a kind never decides whether it applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ppml_kernel.attestation.collateral import Collateral
from ppml_kernel.attestation.quote import QuoteInfo
from ppml_kernel.attestation.result import VerificationResult


@dataclass(frozen=True)
class Evidence:
    """What travels from an attester to a verifier.

    ``collateral`` is what the attester sent with the quote (JSON text or parsed), or
    None when the verifier is to fetch it (hardware quotes, from Intel PCS or a PCCS).
    ``info`` is the quote already parsed (parsing proves nothing; verifying does).
    """

    quote: bytes
    info: QuoteInfo
    collateral: Collateral | str | None = None


class EvidenceVerifier(Protocol):
    """Verifies one kind of evidence against one trust anchor and a policy."""

    kind: str

    def verify(
        self, evidence: Evidence, expected_report_data: bytes | None, at: int
    ) -> VerificationResult:
        """Verify ``evidence`` at ``at``; fail closed (a red result, never an exception)."""
        ...
