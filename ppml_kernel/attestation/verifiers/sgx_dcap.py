"""SGX DCAP quotes from real hardware: Intel's root, collateral from PCS/PCCS or sent.

Its policy section pins the enclave: MRENCLAVE, MRSIGNER, ISVPRODID and a minimum ISVSVN.
"""

from __future__ import annotations

from dataclasses import dataclass

from ppml_kernel.attestation.checks import Check, allow_list
from ppml_kernel.attestation.quote import QuoteInfo
from ppml_kernel.attestation.verifiers.dcap import HardwareDcapVerifier

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


class SgxDcapVerifier(HardwareDcapVerifier):
    """Hardware SGX quotes, verified against Intel's root (or an operator's)."""

    kind = "sgx-dcap"
    tee = "SGX"
