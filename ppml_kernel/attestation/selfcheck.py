"""Quote this enclave for a fresh nonce and verify the quote here.

A self-check proves nothing to a remote party (the browser must verify for
itself); it shows the user what evidence this kernel produces and whether its
own policy would accept it.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

from ppml_kernel.attestation.anchors import TrustAnchor
from ppml_kernel.attestation.policy import Policy
from ppml_kernel.attestation.result import VerificationResult
from ppml_kernel.attestation.verifier import Verifier
from ppml_kernel.tee.base import Attester

SELF_CHECK_DOMAIN = b"ppml-kernel self-check/1\x00"
ENV_POLICY = "PPML_POLICY"


@dataclass(frozen=True)
class SelfCheck:
    """A fresh quote, its verification, and how long each part took."""

    nonce: bytes
    report_data: bytes
    quote: bytes
    collateral: str | None
    result: VerificationResult
    quote_ms: float
    verify_ms: float


def self_check_report_data(nonce: bytes) -> bytes:
    """REPORT_DATA for a self-check: SHA-512 over a domain string and the nonce."""
    return hashlib.sha512(SELF_CHECK_DOMAIN + nonce).digest()


def simulated_anchor_of(attester: Attester) -> TrustAnchor | None:
    """The trust anchor of a simulated attester's own PKI (None for hardware)."""
    pki = getattr(attester, "pki", None)
    if not attester.simulated or pki is None:
        return None
    return TrustAnchor(f"SIMULATED root {pki.root_fingerprint[:16]}", pki.root_der, simulated=True)


def kernel_policy(attester: Attester) -> Policy:
    """``$PPML_POLICY`` if set; else the default, allowing simulation only for a
    kernel that was explicitly installed as simulated."""
    path = os.environ.get(ENV_POLICY)
    if path:
        return Policy.load(path)
    return Policy(allow_simulated=attester.simulated)


def self_check(
    attester: Attester, *, nonce: bytes | None = None, policy: Policy | None = None
) -> SelfCheck:
    """Quote for ``nonce`` (random if None) and verify the quote with ``policy``."""
    nonce = os.urandom(32) if nonce is None else nonce
    report_data = self_check_report_data(nonce)
    t0 = time.perf_counter()
    quote = attester.quote(report_data)
    collateral = attester.collateral()
    t1 = time.perf_counter()
    verifier = Verifier(
        policy or kernel_policy(attester), simulated_anchor=simulated_anchor_of(attester)
    )
    result = verifier.verify(quote, collateral, expected_report_data=report_data)
    t2 = time.perf_counter()
    return SelfCheck(
        nonce, report_data, quote, collateral, result, (t1 - t0) * 1e3, (t2 - t1) * 1e3
    )
