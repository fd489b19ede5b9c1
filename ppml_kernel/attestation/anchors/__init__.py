"""Trust anchors: Intel's SGX root, pinned, and the local simulated root on request.

The verdict "simulated" comes from *which anchor verified a quote*, never from a
label inside the quote. The simulated root is never part of the default set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from ppml_kernel.attestation.errors import TrustAnchorError

INTEL_ROOT_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"


@dataclass(frozen=True)
class TrustAnchor:
    """A root certificate that quotes may chain to."""

    name: str
    der: bytes
    simulated: bool = False

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


@cache
def intel_root() -> TrustAnchor:
    """Intel's SGX Root CA as shipped in the package, checked against its pinned hash."""
    der = files(__package__).joinpath("IntelSGXRootCA.der").read_bytes()
    if hashlib.sha256(der).hexdigest() != INTEL_ROOT_SHA256:
        raise TrustAnchorError("the packaged Intel SGX Root CA does not match its pinned SHA-256")
    return TrustAnchor("Intel SGX Root CA", der)


def simulated_root(pki_dir: str | None = None) -> TrustAnchor | None:
    """This installation's simulated root, if one was made (never created here).

    Only the public root certificate is read: verifying needs no private key.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from ppml_kernel.tee.simulated.paths import root_certificate_path

    path = root_certificate_path(pki_dir)
    try:
        der = x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)
    except (OSError, ValueError):
        return None
    name = f"SIMULATED root {hashlib.sha256(der).hexdigest()[:16]} ({path.parent})"
    return TrustAnchor(name, der, simulated=True)
