"""One verifier per evidence kind behind one small interface (:class:`EvidenceVerifier`).

``sgx_dcap`` and ``tdx_dcap`` take hardware quotes (Intel's root, collateral sent or
fetched); ``simulated`` takes the simulator's quotes (its root, the collateral it sent).
A new TEE kind is a new module here: an ``EvidenceVerifier`` and its policy section.
:class:`~ppml_kernel.attestation.Verifier` picks the kind for each quote.
"""

from ppml_kernel.attestation.verifiers.base import Evidence, EvidenceVerifier
from ppml_kernel.attestation.verifiers.sgx_dcap import SgxDcapVerifier, SgxPolicy
from ppml_kernel.attestation.verifiers.simulated import SimulatedVerifier
from ppml_kernel.attestation.verifiers.tdx_dcap import TdxDcapVerifier, TdxPolicy

KINDS: dict[str, type] = {
    SgxDcapVerifier.kind: SgxDcapVerifier,
    TdxDcapVerifier.kind: TdxDcapVerifier,
    SimulatedVerifier.kind: SimulatedVerifier,
}

__all__ = [
    "KINDS",
    "Evidence",
    "EvidenceVerifier",
    "SgxDcapVerifier",
    "SgxPolicy",
    "SimulatedVerifier",
    "TdxDcapVerifier",
    "TdxPolicy",
]
