"""Verify a quote: parse, pick the trust anchor, hand it to the verifier of its kind.

The evidence kinds live in ``verifiers/`` (SGX DCAP, TDX DCAP, simulated), one module
each behind :class:`~ppml_kernel.attestation.verifiers.EvidenceVerifier`. This module
only decides *which* root a quote may chain to and therefore which kind judges it.
It fails closed: any bad input is a red result, never a pass. It holds no key: a
simulated quote is verified with the collateral its attester sent, never with
collateral made here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ppml_kernel.attestation.anchors import TrustAnchor, intel_root, simulated_root
from ppml_kernel.attestation.collateral import Collateral, CollateralClient
from ppml_kernel.attestation.errors import QuoteParseError
from ppml_kernel.attestation.policy import Policy
from ppml_kernel.attestation.quote import QuoteInfo, parse_quote
from ppml_kernel.attestation.result import VerificationResult
from ppml_kernel.attestation.verifiers import (
    Evidence,
    EvidenceVerifier,
    SgxDcapVerifier,
    SimulatedVerifier,
    TdxDcapVerifier,
)


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
    ``simulated_pki_dir`` only says where to find the simulated root *certificate*;
    nothing else of that directory is read.
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
        """Verify ``raw_quote`` at ``at`` (default: now). Never raises for bad input.

        ``collateral`` is what came with the quote; None means "fetch it" for hardware
        quotes and "refuse" for simulated ones.
        """
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
        evidence = Evidence(raw_quote, info, collateral)
        return self.kind_for(info, anchor).verify(evidence, expected_report_data, now)

    def kind_for(self, info: QuoteInfo, anchor: TrustAnchor) -> EvidenceVerifier:
        """The evidence kind that judges a quote: by the root it chains to, then its TEE."""
        if anchor.simulated:
            return SimulatedVerifier(self.policy, anchor)
        kind = SgxDcapVerifier if info.tee == "SGX" else TdxDcapVerifier
        return kind(self.policy, anchor, self._collateral_client)
