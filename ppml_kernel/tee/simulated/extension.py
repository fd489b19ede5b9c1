"""DER encoding of Intel's SGX extension (OID 1.2.840.113741.1.13.1) for PCK leaves.

``cryptography`` has no public generic ASN.1 encoder, and the extension is a
plain nest of ``SEQUENCE { OID, value }`` pairs, so a few lines of DER suffice.
The layout copies Intel's PCK certificates, which is what dcap-qvl parses
(``src/intel.rs``): PPID, TCB (16 component SVNs, PCESVN, CPUSVN), PCE-ID,
FMSPC, SGX type.
"""

from __future__ import annotations

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_PPID = f"{SGX_EXTENSION_OID}.1"
_TCB = f"{SGX_EXTENSION_OID}.2"
_PCEID = f"{SGX_EXTENSION_OID}.3"
_FMSPC = f"{SGX_EXTENSION_OID}.4"
_SGX_TYPE = f"{SGX_EXTENSION_OID}.5"
SGX_TYPE_STANDARD = 0


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def _oid(dotted: str) -> bytes:
    arcs = [int(part) for part in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _unsigned(tag: int, value: int) -> bytes:
    # Minimal two's-complement encoding of a non-negative number (INTEGER / ENUMERATED).
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return _tlv(tag, body)


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _pair(oid: str, value: bytes) -> bytes:
    return _seq(_oid(oid), value)


def sgx_extension_value(
    *, ppid: bytes, cpu_svn: bytes, pce_svn: int, pce_id: bytes, fmspc: bytes
) -> bytes:
    """The DER value (contents of the extension's OCTET STRING) for one PCK leaf."""
    if len(ppid) != 16 or len(cpu_svn) != 16 or len(pce_id) != 2 or len(fmspc) != 6:
        raise ValueError("PPID and CPUSVN must be 16 bytes, PCE-ID 2, FMSPC 6")
    if not 0 <= pce_svn <= 0xFFFF:
        raise ValueError("PCESVN must fit in 16 bits")
    components = [_pair(f"{_TCB}.{i + 1}", _unsigned(0x02, svn)) for i, svn in enumerate(cpu_svn)]
    tcb = _seq(
        *components,
        _pair(f"{_TCB}.17", _unsigned(0x02, pce_svn)),
        _pair(f"{_TCB}.18", _tlv(0x04, cpu_svn)),
    )
    return _seq(
        _pair(_PPID, _tlv(0x04, ppid)),
        _pair(_TCB, tcb),
        _pair(_PCEID, _tlv(0x04, pce_id)),
        _pair(_FMSPC, _tlv(0x04, fmspc)),
        _pair(_SGX_TYPE, _unsigned(0x0A, SGX_TYPE_STANDARD)),
    )
