"""ppml-kernel: a Jupyter kernel for confidential data science.

Layers, each knowing only the ones below it:
``tee`` (produce evidence) -> ``attestation`` (verify evidence, policy, collateral)
-> ``channel`` (browser <-> enclave crypto) -> ``kernel`` + ``magics`` (Jupyter surface).
"""

__version__ = "0.1.0"

PROTOCOL_VERSION = "ppml-attest/2"
