"""PPMLKernel: stock IPython, plus an attester, the ``%ppml`` magics and a ``ppml``
section in ``kernel_info`` that frontends use to recognise a PPML kernel.

Start-up stays as cheap as ipykernel's: choosing the attester only inspects a few
paths, and nothing here imports pyspark, cryptography or dcap-qvl until a magic
needs them (an idle kernel starts no JVM).
"""

from __future__ import annotations

from typing import Any

from ipykernel.ipkernel import IPythonKernel

from ppml_kernel import PROTOCOL_VERSION, __version__
from ppml_kernel.tee import Attester, get_attester
from ppml_kernel.tee.factory import requested_kind


def _collateral_for(quote: bytes) -> str:
    """Collateral for a hardware quote, from Intel PCS or ``$PPML_PCCS_URL`` (cached)."""
    from ppml_kernel.attestation.collateral import CollateralClient

    return CollateralClient().for_quote(quote).text


class PPMLKernel(IPythonKernel):
    """An IPython kernel that knows which TEE it runs in and can prove it."""

    implementation = "ppml"
    implementation_version = __version__

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tee_kind = requested_kind()
        self._attester: Attester | None = None
        from ppml_kernel.channel.jupyter import install as install_channel
        from ppml_kernel.magics import load_ipython_extension

        # The browser's attested channel: comm target plus control-channel route, and
        # getpass() through it. Quotes are made per browser request, never at start.
        install_channel(
            self,
            attester=lambda: self.attester,
            collateral_provider=_collateral_for,
            kernel_info={"implementation": self.implementation, "version": __version__},
        )
        load_ipython_extension(self.shell)

    @property
    def attester(self) -> Attester:
        """The attester for this kernel's TEE, built on first use."""
        if self._attester is None:
            self._attester = get_attester(self.tee_kind)
        return self._attester

    @property
    def simulated(self) -> bool:
        return self.tee_kind == "simulated"

    @property
    def banner(self) -> str:  # type: ignore[override]
        base = super().banner or ""
        if self.simulated:
            note = "PPML kernel on a SIMULATED enclave: NOT confidential (teaching, demos, tests)."
        else:
            note = f"PPML kernel in a {self.tee_kind} TEE. Run %ppml status to see its evidence."
        return f"{base}\n{note}\n"

    @property
    def kernel_info(self) -> dict[str, Any]:
        info = super().kernel_info
        info["ppml"] = {
            "protocol_version": PROTOCOL_VERSION,
            "version": __version__,
            "tee": self.tee_kind,
            "simulated": self.simulated,
        }
        return info
