"""Verify attestation evidence: parse, collateral, dcap-qvl verification, policy."""

from ppml_kernel.attestation.anchors import TrustAnchor, intel_root, simulated_root
from ppml_kernel.attestation.collateral import Collateral, CollateralClient, CollateralError
from ppml_kernel.attestation.errors import AttestationError
from ppml_kernel.attestation.policy import Check, Policy, PolicyError
from ppml_kernel.attestation.quote import QuoteInfo, QuoteParseError, load_quote_bytes, parse_quote
from ppml_kernel.attestation.result import VerificationResult
from ppml_kernel.attestation.verifier import Verifier
from ppml_kernel.attestation.verifiers import Evidence, EvidenceVerifier

__all__ = [
    "AttestationError",
    "Check",
    "Collateral",
    "CollateralClient",
    "CollateralError",
    "Evidence",
    "EvidenceVerifier",
    "Policy",
    "PolicyError",
    "QuoteInfo",
    "QuoteParseError",
    "TrustAnchor",
    "VerificationResult",
    "Verifier",
    "intel_root",
    "load_quote_bytes",
    "parse_quote",
    "simulated_root",
]
