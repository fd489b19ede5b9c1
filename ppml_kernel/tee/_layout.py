"""Where REPORT_DATA sits in a DCAP quote, so a backend can check its own output.

This is a sanity check, not verification: a hardware backend compares the quote it
got back with the 64 bytes it asked for, which catches a stale quote (Gramine keeps
the last ``user_report_data``) or a concurrent writer (configfs-tsm). Whether the
quote is *genuine* is decided only by the ``attestation`` layer with dcap-qvl.
"""

from __future__ import annotations

import struct
from abc import abstractmethod

from ppml_kernel.tee.base import REPORT_DATA_SIZE, Attester, AttesterError, check_report_data

HEADER_SIZE = 48
TEE_SGX = 0x00000000
TEE_TDX = 0x00000081
_SGX_REPORT_DATA = HEADER_SIZE + 320  # SGX report body offset 320
_TDX_REPORT_DATA = HEADER_SIZE + 520  # TD report body offset 520 (quote v4)
_V5_BODY_PREFIX = 6  # quote v5: body type u16 + body size u32 before the body


def report_data_offset(quote: bytes) -> int:
    """Absolute offset of REPORT_DATA in an SGX v3 or TDX v4/v5 quote."""
    if len(quote) < HEADER_SIZE:
        raise AttesterError(f"quote is {len(quote)} bytes, shorter than the 48-byte header")
    version, _key_type, tee_type = struct.unpack_from("<HHI", quote, 0)
    if tee_type == TEE_SGX and version == 3:
        return _SGX_REPORT_DATA
    if tee_type == TEE_TDX and version == 4:
        return _TDX_REPORT_DATA
    if tee_type == TEE_TDX and version == 5:
        return _TDX_REPORT_DATA + _V5_BODY_PREFIX
    raise AttesterError(f"unsupported quote: version {version}, TEE type {tee_type:#x}")


def embedded_report_data(quote: bytes) -> bytes:
    """The 64 REPORT_DATA bytes the quote carries."""
    offset = report_data_offset(quote)
    end = offset + REPORT_DATA_SIZE
    if len(quote) < end:
        raise AttesterError(f"quote is {len(quote)} bytes, too short for its report body")
    return bytes(quote[offset:end])


def check_binds(quote: bytes, report_data: bytes, source: str) -> bytes:
    """Return ``quote`` if it carries ``report_data``; otherwise say which source lied."""
    if embedded_report_data(quote) != report_data:
        raise AttesterError(
            f"{source} returned a quote for different report data (stale or overwritten "
            "by a concurrent request); refusing it"
        )
    return quote


class SelfCheckingAttester(Attester):
    """A hardware backend: every quote it hands out is checked against the request.

    Subclasses only produce the quote; validating the 64 bytes first and refusing a
    quote that does not carry them afterwards happens here, once for every backend.
    """

    def quote(self, report_data: bytes) -> bytes:
        data = check_report_data(report_data)
        return check_binds(self._produce_quote(data), data, self.quote_source())

    @abstractmethod
    def _produce_quote(self, data: bytes) -> bytes:
        """A quote over ``data`` (64 validated bytes) from this backend's TEE interface."""

    @abstractmethod
    def quote_source(self) -> str:
        """Where quotes come from, for error messages (e.g. ``Occlum /dev/sgx``)."""
