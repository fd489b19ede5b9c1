"""Verify a quote: parse, pick the trust anchor, check with dcap-qvl, apply policy.

All cryptography (certificate chains, CRLs, TCB Info and QE Identity signatures,
QE binding, report signature, TCB level matching) is dcap-qvl's. This module
only decides *which* root a quote may chain to, fetches collateral, and turns
the outcome into a :class:`VerificationResult`. It fails closed: any exception
is a red result, never a pass.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from ppml_kernel.attestation.anchors import TrustAnchor, intel_root, simulated_root
from ppml_kernel.attestation.collateral import Collateral, CollateralClient, CollateralError
from ppml_kernel.attestation.policy import Check, Policy
from ppml_kernel.attestation.quote import QuoteInfo, QuoteParseError, parse_quote
from ppml_kernel.attestation.qvl_errors import explain
from ppml_kernel.attestation.result import VerificationResult


def chain_root_fingerprint(raw_quote: bytes) -> str | None:
    """SHA-256 of the last certificate in the quote's embedded PCK chain, if any.

    Used only to choose which configured anchor to verify against; the
    verification itself decides whether the chain really ends there.
    """
    import hashlib

    import dcap_qvl
    from cryptography import x509

    try:
        pem = dcap_qvl.parse_quote(raw_quote).cert_chain_pem_bytes()
        certs = x509.load_pem_x509_certificates(bytes(pem))
    except ValueError:
        return None
    from cryptography.hazmat.primitives.serialization import Encoding

    return hashlib.sha256(certs[-1].public_bytes(Encoding.DER)).hexdigest()


class Verifier:
    """Verifies quotes against pinned roots and a :class:`Policy`.

    The simulated root is consulted only when ``policy.allow_simulated`` is true
    (or a ``simulated_anchor`` is passed explicitly, for tests and the CLI).
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        anchors: Sequence[TrustAnchor] | None = None,
        simulated_anchor: TrustAnchor | None = None,
        simulated_pki_dir: str | None = None,
        collateral_client: CollateralClient | None = None,
    ) -> None:
        self.policy = policy or Policy()
        self.anchors = list(anchors) if anchors is not None else [intel_root()]
        self._simulated_anchor = simulated_anchor
        self._simulated_loaded = simulated_anchor is not None
        self._simulated_pki_dir = simulated_pki_dir
        self._collateral_client = collateral_client

    # -- anchors ------------------------------------------------------------------
    def simulated_anchor(self) -> TrustAnchor | None:
        """This installation's simulated root (looked up once), to recognise simulated quotes."""
        if not self._simulated_loaded:
            self._simulated_anchor = simulated_root(self._simulated_pki_dir)
            self._simulated_loaded = True
        return self._simulated_anchor

    def _choose_anchor(self, raw: bytes) -> tuple[TrustAnchor | None, bool]:
        """(anchor to verify with, whether the chain ends at the simulated root)."""
        root = chain_root_fingerprint(raw)
        sim = self.simulated_anchor()
        claims_sim = sim is not None and root == sim.fingerprint
        candidates = list(self.anchors)
        if sim is not None and self.policy.allow_simulated:
            candidates.append(sim)
        for anchor in candidates:
            if anchor.fingerprint == root:
                return anchor, claims_sim
        if root is None and candidates:
            return candidates[0], False
        return None, claims_sim

    # -- verification -------------------------------------------------------------
    def verify(
        self,
        raw_quote: bytes,
        collateral: Collateral | str | None = None,
        *,
        at: int | None = None,
        expected_report_data: bytes | None = None,
    ) -> VerificationResult:
        """Verify ``raw_quote`` at ``at`` (default: now). Never raises for bad input."""
        now = int(time.time()) if at is None else int(at)
        try:
            info = parse_quote(raw_quote)
        except QuoteParseError as exc:
            return VerificationResult(False, "parse", now, error=f"cannot parse quote: {exc}")

        anchor, claims_sim = self._choose_anchor(raw_quote)
        if anchor is None:
            if claims_sim:
                error = (
                    "the quote comes from a SIMULATED enclave (its chain ends at this "
                    "installation's simulated root) and the policy does not allow simulation"
                )
            else:
                error = "the quote's certificate chain ends at a root that is not trusted"
            return VerificationResult(
                False, "anchor", now, quote=info, simulated=claims_sim, error=error
            )

        try:
            col = self._collateral(raw_quote, collateral, anchor, now)
        except CollateralError as exc:
            return self._failed(info, anchor, now, "collateral", str(exc))
        try:
            windows = tuple(col.windows())
        except (ValueError, KeyError, TypeError) as exc:
            return self._failed(info, anchor, now, "collateral", f"malformed collateral: {exc}")

        import dcap_qvl

        try:
            report = dcap_qvl.verify_with_root_ca(raw_quote, col.to_qvl(), anchor.der, now)
        except (ValueError, CollateralError) as exc:
            reason = explain(str(exc), windows, raw_quote=raw_quote, collateral_text=col.text,
                             at=now)  # no Rust debug values in what people read
            return self._failed(info, anchor, now, "signature", reason, windows)

        detail = json.loads(report.to_json())
        status = str(report.status)
        advisories = tuple(report.advisory_ids)
        checks = self.policy.evaluate(info, status, list(advisories), anchor.simulated)
        if expected_report_data is not None:
            checks.append(_report_data_check(info, expected_report_data))
        passed = all(c.ok for c in checks)
        return VerificationResult(
            passed=passed,
            stage="done" if passed else "policy",
            verified_at=now,
            **_anchored(info, anchor),
            tcb_status=status,
            advisory_ids=advisories,
            qe_status=detail.get("qe_status", {}).get("status"),
            platform_status=detail.get("platform_status", {}).get("status"),
            windows=windows,
            checks=tuple(checks),
        )

    def _collateral(
        self, raw: bytes, given: Collateral | str | None, anchor: TrustAnchor, now: int
    ) -> Collateral:
        if isinstance(given, Collateral):
            return given
        if isinstance(given, str):
            return Collateral.from_json(given)
        if anchor.simulated:
            return self._simulated_collateral(now)
        client = self._collateral_client or CollateralClient()
        return client.for_quote(raw, at=now)

    def _simulated_collateral(self, now: int) -> Collateral:
        """Collateral signed by the local simulated PKI (public data, made on demand)."""
        from ppml_kernel.tee.simulated import SimulatedPKI, SimulatedPKIError, build_collateral

        try:
            pki = SimulatedPKI.load(self._simulated_pki_dir)
        except SimulatedPKIError as exc:
            raise CollateralError(f"no collateral for the simulated quote: {exc}") from None
        return Collateral(build_collateral(pki, now))

    @staticmethod
    def _failed(
        info: QuoteInfo,
        anchor: TrustAnchor,
        now: int,
        stage: str,
        error: str,
        windows: tuple = (),
    ) -> VerificationResult:
        return VerificationResult(
            False, stage, now, **_anchored(info, anchor), windows=windows, error=error
        )


def _anchored(info: QuoteInfo, anchor: TrustAnchor) -> dict[str, Any]:
    """The result fields every outcome past anchor selection has (pass or fail alike)."""
    return {
        "quote": info,
        "anchor": anchor.name,
        "anchor_fingerprint": anchor.fingerprint,
        "simulated": anchor.simulated,
    }


def _report_data_check(info: QuoteInfo, expected: bytes) -> Check:
    want = expected.hex()
    return Check("report_data", info.report_data == want, want, info.report_data)
