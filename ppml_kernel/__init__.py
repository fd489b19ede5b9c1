"""ppml-kernel: a Jupyter kernel for confidential data science.

Layers, each knowing only the ones below it (docs/architecture.md, tests/test_layers.py):
``tee`` (produce evidence) -> ``attestation`` (verify evidence, policy, collateral)
-> ``keys`` -> ``channel`` (browser <-> enclave crypto) | ``data`` -> ``spark``
-> ``kernel`` + ``magics`` (Jupyter surface) -> ``cli`` + ``occlum`` (clients).
"""

__version__ = "0.1.0"

PROTOCOL_VERSION = "ppml-attest/2"
