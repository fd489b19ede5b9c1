"""The one small interface every TEE backend implements.

An attester only *produces* evidence; deciding whether evidence is good is the
``attestation`` layer's job. Keeping the two apart means a compromised or
misconfigured backend can never vouch for itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from ppml_kernel.tee.errors import TEEError

REPORT_DATA_SIZE = 64


class AttesterError(TEEError, RuntimeError):
    """Evidence could not be produced (no device, driver refused, bad input)."""


class AttesterUnavailable(AttesterError):
    """The TEE this attester needs is not present on this machine."""


def check_report_data(report_data: bytes) -> bytes:
    """Return ``report_data`` if it is exactly the 64 bytes a quote binds, else raise."""
    if not isinstance(report_data, (bytes, bytearray, memoryview)):
        raise TypeError(f"report_data must be bytes, not {type(report_data).__name__}")
    data = bytes(report_data)
    if len(data) != REPORT_DATA_SIZE:
        raise ValueError(f"report_data must be {REPORT_DATA_SIZE} bytes, got {len(data)}")
    return data


def write_report_data_file(path: str, data: bytes) -> None:
    """Write the 64 REPORT_DATA bytes to a TEE pseudo-file in one unbuffered write.

    Gramine's ``user_report_data`` and configfs-tsm's ``inblob`` both take the data
    in a single write; a short write means the TEE did not take it.
    """
    try:
        with open(path, "wb", buffering=0) as f:
            written = f.write(data)
    except OSError as exc:
        raise AttesterError(f"cannot write {path}: {exc.strerror or exc}") from None
    if written != REPORT_DATA_SIZE:
        raise AttesterError(f"{path} took {written} of {REPORT_DATA_SIZE} bytes")


class Attester(ABC):
    """Produces attestation quotes from inside a TEE.

    ``kind`` names the backend (``simulated``, ``occlum``, ``gramine``, ``tdx``).
    ``simulated`` is True only for the simulated backend; the verifier never trusts
    this flag, it decides by which trust anchor verified a quote.
    """

    kind: ClassVar[str]
    simulated: ClassVar[bool] = False
    description: ClassVar[str] = ""

    @classmethod
    def available(cls) -> bool:
        """Whether this machine looks like it can run this backend (cheap, no side effects)."""
        return False

    @abstractmethod
    def quote(self, report_data: bytes) -> bytes:
        """Return a fresh quote whose REPORT_DATA is exactly ``report_data`` (64 bytes)."""

    def collateral(self) -> str | None:
        """Collateral JSON (dcap-qvl ``QuoteCollateralV3``) for this attester's quotes.

        ``None`` means "fetch it from Intel PCS or the configured PCCS", which is what
        real hardware needs; the simulated attester returns collateral of its own.
        """
        return None

    def describe(self) -> dict[str, object]:
        """Facts worth showing a user about this backend (no secrets)."""
        return {"kind": self.kind, "simulated": self.simulated, "description": self.description}
