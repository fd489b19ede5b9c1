"""What every DCAP-quote kind shares: dcap-qvl verification, then the policy.

All cryptography (certificate chains, CRLs, TCB Info and QE Identity signatures,
QE binding, report signature, TCB level matching) is dcap-qvl's. The kinds differ
only in where collateral may come from and which TEE's quotes they take.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ppml_kernel.attestation.anchors import TrustAnchor
from ppml_kernel.attestation.checks import Check
from ppml_kernel.attestation.collateral import Collateral, CollateralClient, CollateralError
from ppml_kernel.attestation.quote import QuoteInfo
from ppml_kernel.attestation.qvl_errors import explain
from ppml_kernel.attestation.result import VerificationResult

if TYPE_CHECKING:
    from ppml_kernel.attestation.policy import Policy
    from ppml_kernel.attestation.verifiers.base import Evidence


class HardwareDcapVerifier:
    """A hardware kind: collateral as sent, else fetched for the quote's platform.

    Subclasses name the kind and the TEE type they take; a quote of another TEE type is
    refused rather than judged by the wrong policy section.
    """

    kind = "dcap"
    tee = ""

    def __init__(
        self, policy: Policy, anchor: TrustAnchor, collateral_client: CollateralClient | None
    ) -> None:
        self.policy = policy
        self.anchor = anchor
        self.collateral_client = collateral_client

    def verify(
        self, evidence: Evidence, expected_report_data: bytes | None, at: int
    ) -> VerificationResult:
        """Collateral (sent or fetched, never made up), then dcap-qvl and the policy."""
        if evidence.info.tee != self.tee:
            return wrong_tee(evidence, self.anchor, at, self.kind)
        try:
            collateral = sent_collateral(evidence)
            if collateral is None:
                client = self.collateral_client or CollateralClient()
                collateral = client.for_quote(evidence.quote, at=at)
        except CollateralError as exc:
            return failed(evidence.info, self.anchor, at, "collateral", str(exc))
        return verify_dcap(evidence, collateral, self.anchor, self.policy, at,
                           expected_report_data)


def sent_collateral(evidence: Evidence) -> Collateral | None:
    """The collateral that came with the evidence, parsed (None if none was sent)."""
    given = evidence.collateral
    if given is None or isinstance(given, Collateral):
        return given
    return Collateral.from_json(given)


def wrong_tee(evidence: Evidence, anchor: TrustAnchor, at: int, kind: str) -> VerificationResult:
    """A kind handed a quote of another TEE refuses it (fail closed)."""
    return failed(evidence.info, anchor, at, "anchor", f"the {kind} verifier cannot verify a "
                  f"{evidence.info.tee} quote")


def verify_dcap(
    evidence: Evidence,
    collateral: Collateral,
    anchor: TrustAnchor,
    policy: Policy,
    at: int,
    expected_report_data: bytes | None,
) -> VerificationResult:
    """dcap-qvl against ``anchor`` and ``collateral``, then every check of ``policy``."""
    info, raw = evidence.info, evidence.quote
    try:
        windows = tuple(collateral.windows())
    except (ValueError, KeyError, TypeError) as exc:
        return failed(info, anchor, at, "collateral", f"malformed collateral: {exc}")

    import dcap_qvl

    try:
        report = dcap_qvl.verify_with_root_ca(raw, collateral.to_qvl(), anchor.der, at)
    except (ValueError, CollateralError) as exc:
        reason = explain(str(exc), windows, raw_quote=raw, collateral_text=collateral.text,
                         at=at)  # no Rust debug values in what people read
        return failed(info, anchor, at, "signature", reason, windows)

    detail = json.loads(report.to_json())
    status = str(report.status)
    advisories = tuple(report.advisory_ids)
    checks = policy.evaluate(info, status, list(advisories), anchor.simulated)
    if expected_report_data is not None:
        checks.append(report_data_check(info, expected_report_data))
    passed = all(c.ok for c in checks)
    return VerificationResult(
        passed=passed,
        stage="done" if passed else "policy",
        verified_at=at,
        **anchored(info, anchor),
        tcb_status=status,
        advisory_ids=advisories,
        qe_status=detail.get("qe_status", {}).get("status"),
        platform_status=detail.get("platform_status", {}).get("status"),
        windows=windows,
        checks=tuple(checks),
    )


def failed(
    info: QuoteInfo,
    anchor: TrustAnchor,
    at: int,
    stage: str,
    error: str,
    windows: tuple = (),
) -> VerificationResult:
    """A red result past anchor selection (it names the anchor and the quote)."""
    return VerificationResult(
        False, stage, at, **anchored(info, anchor), windows=windows, error=error
    )


def anchored(info: QuoteInfo, anchor: TrustAnchor) -> dict[str, Any]:
    """The result fields every outcome past anchor selection has (pass or fail alike)."""
    return {
        "quote": info,
        "anchor": anchor.name,
        "anchor_fingerprint": anchor.fingerprint,
        "simulated": anchor.simulated,
    }


def report_data_check(info: QuoteInfo, expected: bytes) -> Check:
    """REPORT_DATA must be exactly what the relying party expects (binds a key or nonce)."""
    want = expected.hex()
    return Check("report_data", info.report_data == want, want, info.report_data)
