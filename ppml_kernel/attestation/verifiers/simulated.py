"""SIMULATED quotes: verified only against the simulated root, with the collateral the
simulated attester produced and sent.

The verifier never makes collateral itself: that would need the simulated PKI's
private keys, and the verifying side must never hold a producer's keys (a verifier
that can sign collateral can vouch for anything). No collateral sent, no pass.
Policy decides whether simulation is acceptable at all (the ``simulation`` check);
like Trustee's non-TEE "sample" kind, the default policy refuses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ppml_kernel.attestation.anchors import TrustAnchor
from ppml_kernel.attestation.collateral import CollateralError
from ppml_kernel.attestation.result import VerificationResult
from ppml_kernel.attestation.verifiers import dcap

if TYPE_CHECKING:
    from ppml_kernel.attestation.policy import Policy
    from ppml_kernel.attestation.verifiers.base import Evidence

NO_COLLATERAL = (
    "no collateral for the simulated quote: the simulated enclave sends its collateral "
    "with its quote (pass it with the quote, e.g. --collateral FILE)"
)


class SimulatedVerifier:
    """SGX-shaped quotes from this project's simulator; its policy section is SGX's."""

    kind = "simulated"
    tee = "SGX"

    def __init__(self, policy: Policy, anchor: TrustAnchor) -> None:
        if not anchor.simulated:
            raise ValueError("the simulated verifier takes only a simulated root")
        self.policy = policy
        self.anchor = anchor

    def verify(
        self, evidence: Evidence, expected_report_data: bytes | None, at: int
    ) -> VerificationResult:
        """dcap-qvl against the simulated root and the sent collateral, then policy."""
        if evidence.info.tee != self.tee:
            return dcap.wrong_tee(evidence, self.anchor, at, self.kind)
        try:
            collateral = dcap.sent_collateral(evidence)
        except CollateralError as exc:
            return dcap.failed(evidence.info, self.anchor, at, "collateral", str(exc))
        if collateral is None:
            return dcap.failed(evidence.info, self.anchor, at, "collateral", NO_COLLATERAL)
        return dcap.verify_dcap(evidence, collateral, self.anchor, self.policy, at,
                                expected_report_data)
