"""Parse a DCAP quote into the fields a person or a policy looks at.

dcap-qvl does the structural parsing (and rejects malformed quotes); the few
fields it does not expose (ISVPRODID, ISVSVN, MISCSELECT) are read at the offsets
of Intel's layout (BRIEF §3). Parsing proves nothing: only a verified quote's
fields may be trusted.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, field

from ppml_kernel.attestation.errors import QuoteParseError

HEADER_SIZE = 48
SGX_BODY_SIZE = 384
TEE_TYPE_SGX = 0x00
TEE_TYPE_TDX = 0x81
SGX_DEBUG_FLAG = 0x02  # ATTRIBUTES byte 0, bit 1
TDX_DEBUG_FLAG = 0x01  # TDATTRIBUTES byte 0, bit 0 (TUD.DEBUG)


@dataclass(frozen=True)
class QuoteInfo:
    """The readable content of a quote (SGX report or TDX TD report)."""

    version: int
    tee: str  # "SGX" or "TDX"
    attestation_key_type: int
    qe_svn: int
    pce_svn: int
    user_data: str
    fmspc: str
    pck_ca: str
    report_data: str
    debug: bool
    # SGX
    mrenclave: str | None = None
    mrsigner: str | None = None
    isv_prod_id: int | None = None
    isv_svn: int | None = None
    attributes: str | None = None
    miscselect: int | None = None
    cpu_svn: str | None = None
    # TDX
    mr_td: str | None = None
    rtmr: tuple[str, ...] = field(default_factory=tuple)
    td_attributes: str | None = None
    mr_seam: str | None = None
    mr_config_id: str | None = None
    mr_owner: str | None = None
    xfam: str | None = None
    body: str = ""

    @property
    def measurement(self) -> str:
        """The primary measurement: MRENCLAVE for SGX, MRTD for TDX."""
        return (self.mrenclave if self.tee == "SGX" else self.mr_td) or ""

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["rtmr"] = list(self.rtmr)
        return data


def load_quote_bytes(data: bytes) -> bytes:
    """Accept raw quote bytes or hex text (``.hex``/``.txt`` files, ``0x`` prefix allowed)."""
    stripped = data.strip()
    if stripped and all(c in b"0123456789abcdefABCDEFx" for c in stripped[:64]):
        text = stripped.decode("ascii", "replace").removeprefix("0x").removeprefix("0X")
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    return data


def parse_quote(raw: bytes) -> QuoteInfo:
    """Parse ``raw``; raise :class:`QuoteParseError` naming what is wrong."""
    import dcap_qvl

    if len(raw) < HEADER_SIZE:
        raise QuoteParseError(f"quote is {len(raw)} bytes; a DCAP quote header alone is 48")
    version, key_type, tee_type = struct.unpack_from("<HHI", raw, 0)
    if version not in (3, 4, 5):
        raise QuoteParseError(f"quote version {version} is not a DCAP quote version (3, 4 or 5)")
    try:
        quote = dcap_qvl.parse_quote(raw)
    except ValueError as exc:
        raise QuoteParseError(f"malformed v{version} quote: {exc}") from None
    header = quote.header
    try:
        fmspc, pck_ca = quote.fmspc(), quote.ca()
    except ValueError:
        fmspc, pck_ca = "", ""
    common = {
        "version": version,
        "attestation_key_type": key_type,
        "qe_svn": header.qe_svn,
        "pce_svn": header.pce_svn,
        "user_data": bytes(header.user_data).hex(),
        "fmspc": fmspc,
        "pck_ca": pck_ca,
        "body": type(quote.report).__name__.removeprefix("Py"),
    }
    report = quote.report
    if tee_type == TEE_TYPE_SGX:
        body = raw[HEADER_SIZE : HEADER_SIZE + SGX_BODY_SIZE]
        (miscselect,) = struct.unpack_from("<I", body, 16)
        isv_prod_id, isv_svn = struct.unpack_from("<HH", body, 256)
        attributes = bytes(report.attributes)
        return QuoteInfo(
            tee="SGX",
            report_data=bytes(report.report_data).hex(),
            debug=bool(attributes[0] & SGX_DEBUG_FLAG),
            mrenclave=bytes(report.mr_enclave).hex(),
            mrsigner=bytes(report.mr_signer).hex(),
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            attributes=attributes.hex(),
            miscselect=miscselect,
            cpu_svn=bytes(report.cpu_svn).hex(),
            **common,
        )
    if tee_type == TEE_TYPE_TDX:
        td_attributes = bytes(report.td_attributes)
        return QuoteInfo(
            tee="TDX",
            report_data=bytes(report.report_data).hex(),
            debug=bool(td_attributes[0] & TDX_DEBUG_FLAG),
            mr_td=bytes(report.mr_td).hex(),
            rtmr=tuple(bytes(getattr(report, f"rt_mr{i}")).hex() for i in range(4)),
            td_attributes=td_attributes.hex(),
            mr_seam=bytes(report.mr_seam).hex(),
            mr_config_id=bytes(report.mr_config_id).hex(),
            mr_owner=bytes(report.mr_owner).hex(),
            xfam=bytes(report.xfam).hex(),
            **common,
        )
    raise QuoteParseError(f"TEE type 0x{tee_type:x} is neither SGX (0x0) nor TDX (0x81)")
