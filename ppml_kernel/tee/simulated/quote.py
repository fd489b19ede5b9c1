"""Real Intel SGX DCAP v3 quote bytes, signed by the simulated PKI.

Layout (absolute offsets): header [0,48), ISV report body [48,432), signature
data length u32 @432, then the ECDSA signature over [0,432), the attestation
public key, the QE report (bound to the attestation key by
``REPORT_DATA[0:32] = SHA-256(attestation key || QE auth data)``), the QE report
signature by the PCK leaf key, the QE auth data and certification data type 5
(PEM chain: PCK leaf, PCK Platform CA, root).

Everything after the ISV signature depends only on the PKI and the emulated TCB
level, so it is built once per level and reused: a quote costs one ECDSA sign.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import weakref
from dataclasses import dataclass

from ppml_kernel.tee.base import check_report_data
from ppml_kernel.tee.simulated import tcb
from ppml_kernel.tee.simulated.pki import SimulatedPKI

QUOTE_VERSION = 3
ATTESTATION_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_SGX = 0
INTEL_QE_VENDOR_ID = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")
USER_DATA = b"SIMULATED".ljust(20, b"\0")
QE_AUTH_DATA = bytes(range(32))  # dcap-qvl requires exactly 32 bytes (AUTHENTICATION_DATA_LEN)
CERT_DATA_PCK_CHAIN = 5
CERT_DATA_QE_REPORT = 6

HEADER_SIZE = 48
REPORT_BODY_SIZE = 384
SIGNED_SIZE = HEADER_SIZE + REPORT_BODY_SIZE  # 432

ATTR_INIT = 0x01
ATTR_DEBUG = 0x02
ATTR_MODE64BIT = 0x04
ENCLAVE_XFRM = 0xE7

# SGX REPORT BODY: CPUSVN, MISCSELECT, reserved, ATTRIBUTES, MRENCLAVE, reserved,
# MRSIGNER, reserved, ISVPRODID, ISVSVN, reserved, REPORT_DATA.
_REPORT_BODY = struct.Struct("<16sI28x16s32s32x32s96xHH60x64s")
_HEADER_FIXED = struct.Struct("<HHIHH")  # then QE vendor id (16) and user data (20)
assert _REPORT_BODY.size == REPORT_BODY_SIZE and _HEADER_FIXED.size + 36 == HEADER_SIZE


def report_body(
    *,
    cpu_svn: bytes,
    misc_select: int,
    attributes: bytes,
    mrenclave: bytes,
    mrsigner: bytes,
    isv_prod_id: int,
    isv_svn: int,
    report_data: bytes,
) -> bytes:
    """A 384-byte SGX report body (the ISV enclave's, or the QE's)."""
    return _REPORT_BODY.pack(
        cpu_svn, misc_select, attributes, mrenclave, mrsigner, isv_prod_id, isv_svn, report_data
    )


def enclave_attributes(debug: bool) -> bytes:
    """ATTRIBUTES: INIT | MODE64BIT (| DEBUG), XFRM 0xE7."""
    flags = ATTR_INIT | ATTR_MODE64BIT | (ATTR_DEBUG if debug else 0)
    return struct.pack("<QQ", flags, ENCLAVE_XFRM)


def quote_header(
    *,
    qe_svn: int,
    pce_svn: int,
    version: int = QUOTE_VERSION,
    tee_type: int = TEE_TYPE_SGX,
    key_type: int = ATTESTATION_KEY_TYPE_ECDSA_P256,
    vendor_id: bytes = INTEL_QE_VENDOR_ID,
    user_data: bytes = USER_DATA,
) -> bytes:
    """The 48-byte quote header (lengths are not checked: tests forge odd ones)."""
    fixed = _HEADER_FIXED.pack(version, key_type, tee_type, qe_svn, pce_svn)
    return fixed + vendor_id + user_data


def qe_report_data(attestation_key: bytes, qe_auth_data: bytes) -> bytes:
    """The QE report's REPORT_DATA binding the attestation key: SHA-256(key || auth) || 0^32."""
    return hashlib.sha256(attestation_key + qe_auth_data).digest() + bytes(32)


def qe_certification_data(
    qe_report: bytes, qe_report_signature: bytes, qe_auth_data: bytes, pck_chain: bytes
) -> bytes:
    """QE report, its PCK signature, QE auth data and certification data type 5 (PEM chain).

    SGX v3 quotes carry this after the attestation key; TDX v4 quotes wrap it in
    certification data type 6 (:func:`qe_report_certification`).
    """
    return b"".join(
        (
            qe_report,
            qe_report_signature,
            struct.pack("<H", len(qe_auth_data)),
            qe_auth_data,
            struct.pack("<HI", CERT_DATA_PCK_CHAIN, len(pck_chain)),
            pck_chain,
        )
    )


def qe_report_certification(inner: bytes) -> bytes:
    """Certification data type 6 (QE report certification data) around ``inner``."""
    return struct.pack("<HI", CERT_DATA_QE_REPORT, len(inner)) + inner


def ecdsa_quote(
    signed: bytes, isv_signature: bytes, attestation_key: bytes, certification: bytes
) -> bytes:
    """Header and report body, then the ECDSA quote signature data (length-prefixed)."""
    auth = isv_signature + attestation_key + certification
    return signed + struct.pack("<I", len(auth)) + auth


@dataclass(frozen=True)
class _Template:
    header: bytes
    cpu_svn: bytes
    attestation_key: bytes
    certification: bytes  # QE report .. end of certification data


_templates: weakref.WeakKeyDictionary[SimulatedPKI, dict[str, _Template]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def _build_template(pki: SimulatedPKI, tcb_status: str) -> _Template:
    level = tcb.tcb_level(tcb_status)
    leaf = pki.pck_leaf(tcb_status)
    attestation_key = pki.attestation_public_key
    qe_report = report_body(
        cpu_svn=level.cpu_svn,
        misc_select=tcb.QE_MISCSELECT,
        attributes=tcb.QE_ATTRIBUTES,
        mrenclave=pki.qe_mrenclave,
        mrsigner=pki.qe_mrsigner,
        isv_prod_id=tcb.QE_ISVPRODID,
        isv_svn=tcb.QE_ISVSVN,
        report_data=qe_report_data(attestation_key, QE_AUTH_DATA),
    )
    chain = leaf.pem + pki.platform_ca_pem + pki.root_pem
    certification = qe_certification_data(qe_report, leaf.sign(qe_report), QE_AUTH_DATA, chain)
    header = quote_header(qe_svn=tcb.QE_ISVSVN, pce_svn=level.pce_svn)
    return _Template(header, level.cpu_svn, attestation_key, certification)


def _template(pki: SimulatedPKI, tcb_status: str) -> _Template:
    with _lock:
        per_pki = _templates.setdefault(pki, {})
        template = per_pki.get(tcb_status)
        if template is None:
            template = per_pki[tcb_status] = _build_template(pki, tcb_status)
        return template


def _u16(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} must be an integer in 0..65535, got {value!r}")
    return value


def _measurement(name: str, value: bytes) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise ValueError(f"{name} must be 32 bytes")
    return bytes(value)


def build_quote(
    pki: SimulatedPKI,
    report_data: bytes,
    *,
    mrenclave: bytes,
    mrsigner: bytes,
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    debug: bool = False,
    tcb_status: str = tcb.DEFAULT_TCB_STATUS,
) -> bytes:
    """A DCAP v3 SGX quote for an enclave with these measurements, binding ``report_data``.

    ``tcb_status`` picks the emulated platform (its PCK leaf's CPUSVN/PCESVN), so the
    verifier reports that status with its advisories; see ``tcb.TCB_STATUSES``.
    """
    data = check_report_data(report_data)
    template = _template(pki, tcb_status)
    body = report_body(
        cpu_svn=template.cpu_svn,
        misc_select=0,
        attributes=enclave_attributes(bool(debug)),
        mrenclave=_measurement("mrenclave", mrenclave),
        mrsigner=_measurement("mrsigner", mrsigner),
        isv_prod_id=_u16("isv_prod_id", isv_prod_id),
        isv_svn=_u16("isv_svn", isv_svn),
        report_data=data,
    )
    signed = template.header + body
    return ecdsa_quote(
        signed, pki.sign_report(signed), template.attestation_key, template.certification
    )
