"""SGX DCAP quotes from real hardware: Intel's root, collateral from PCS/PCCS or sent.

Its policy section pins the enclave: MRENCLAVE, MRSIGNER, ISVPRODID and a minimum ISVSVN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ppml_kernel.attestation.anchors import TrustAnchor
from ppml_kernel.attestation.checks import Check, allow_list
from ppml_kernel.attestation.collateral import CollateralClient, CollateralError
from ppml_kernel.attestation.quote import QuoteInfo
from ppml_kernel.attestation.result import VerificationResult
from ppml_kernel.attestation.verifiers import dcap

if TYPE_CHECKING:
    from ppml_kernel.attestation.policy import Policy
    from ppml_kernel.attestation.verifiers.base import Evidence

# Measurement allow-lists: key -> size in bytes; and the integer pins.
SGX_HEX_FIELDS: dict[str, int] = {"mrenclave": 32, "mrsigner": 32}
SGX_INT_FIELDS: tuple[str, ...] = ("isv_prod_id", "min_isv_svn")


@dataclass(frozen=True)
class SgxPolicy:
    """What an SGX enclave must be: empty allow-lists and None mean "any"."""

    mrenclave: tuple[str, ...] = ()
    mrsigner: tuple[str, ...] = ()
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None

    def pinned(self) -> list[str]:
        """The fields this section pins (a pin binds a policy to SGX)."""
        return [k for k in (*SGX_HEX_FIELDS, *SGX_INT_FIELDS) if getattr(self, k) not in ((), None)]

    def checks(self, quote: QuoteInfo) -> list[Check]:
        """One check per pinned field, in the report's order."""
        checks = []
        if self.mrenclave:
            checks.append(allow_list("mrenclave", self.mrenclave, quote.mrenclave))
        if self.mrsigner:
            checks.append(allow_list("mrsigner", self.mrsigner, quote.mrsigner))
        if self.isv_prod_id is not None:
            checks.append(
                Check(
                    "isv_prod_id",
                    quote.isv_prod_id == self.isv_prod_id,
                    str(self.isv_prod_id),
                    str(quote.isv_prod_id),
                )
            )
        if self.min_isv_svn is not None:
            svn = quote.isv_svn or 0
            checks.append(
                Check("isv_svn", svn >= self.min_isv_svn, f">= {self.min_isv_svn}", str(svn))
            )
        return checks


class SgxDcapVerifier:
    """Hardware SGX quotes: verified against ``anchor`` (Intel's root, or an operator's)."""

    kind = "sgx-dcap"
    tee = "SGX"

    def __init__(
        self, policy: Policy, anchor: TrustAnchor, collateral_client: CollateralClient | None
    ) -> None:
        self.policy = policy
        self.anchor = anchor
        self.collateral_client = collateral_client

    def verify(
        self, evidence: Evidence, expected_report_data: bytes | None, at: int
    ) -> VerificationResult:
        """Collateral as sent, else fetched for the quote's platform; then dcap-qvl and policy."""
        if evidence.info.tee != self.tee:
            return dcap.wrong_tee(evidence, self.anchor, at, self.kind)
        return verify_hardware(self, evidence, expected_report_data, at)


def verify_hardware(
    kind: SgxDcapVerifier, evidence: Evidence, expected_report_data: bytes | None, at: int
) -> VerificationResult:
    """Shared by the hardware kinds: collateral is sent or fetched, never made up."""
    try:
        collateral = dcap.sent_collateral(evidence)
        if collateral is None:
            client = kind.collateral_client or CollateralClient()
            collateral = client.for_quote(evidence.quote, at=at)
    except CollateralError as exc:
        return dcap.failed(evidence.info, kind.anchor, at, "collateral", str(exc))
    return dcap.verify_dcap(evidence, collateral, kind.anchor, kind.policy, at,
                            expected_report_data)
