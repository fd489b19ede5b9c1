"""TDX DCAP quotes (v4/v5) from real hardware: same root and collateral path as SGX.

Its policy section pins the TD: MRTD, RTMR0-3, MRCONFIGID and MROWNER.
"""

from __future__ import annotations

from dataclasses import dataclass

from ppml_kernel.attestation.checks import Check, allow_list
from ppml_kernel.attestation.quote import QuoteInfo
from ppml_kernel.attestation.verifiers.dcap import HardwareDcapVerifier

TDX_HEX_FIELDS: dict[str, int] = {
    "mrtd": 48, "rtmr0": 48, "rtmr1": 48, "rtmr2": 48, "rtmr3": 48, "mrconfigid": 48, "mrowner": 48,
}


@dataclass(frozen=True)
class TdxPolicy:
    """What a trust domain must be: empty allow-lists mean "any"."""

    mrtd: tuple[str, ...] = ()
    rtmr0: tuple[str, ...] = ()
    rtmr1: tuple[str, ...] = ()
    rtmr2: tuple[str, ...] = ()
    rtmr3: tuple[str, ...] = ()
    mrconfigid: tuple[str, ...] = ()
    mrowner: tuple[str, ...] = ()

    def pinned(self) -> list[str]:
        """The fields this section pins (a pin binds a policy to TDX)."""
        return [k for k in TDX_HEX_FIELDS if getattr(self, k)]

    def checks(self, quote: QuoteInfo) -> list[Check]:
        """One allow-list check per pinned register, in TDX_HEX_FIELDS order."""
        rtmr = quote.rtmr if len(quote.rtmr) == 4 else ("",) * 4
        actual = {
            "mrtd": quote.mr_td,
            "rtmr0": rtmr[0],
            "rtmr1": rtmr[1],
            "rtmr2": rtmr[2],
            "rtmr3": rtmr[3],
            "mrconfigid": quote.mr_config_id,
            "mrowner": quote.mr_owner,
        }
        return [
            allow_list(name, getattr(self, name), actual[name])
            for name in TDX_HEX_FIELDS
            if getattr(self, name)
        ]


class TdxDcapVerifier(HardwareDcapVerifier):
    """Hardware TDX quotes; dcap-qvl also checks the TDX module identity and the TD QE."""

    kind = "tdx-dcap"
    tee = "TDX"
