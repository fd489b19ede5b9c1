"""Test-only DCAP forger: a custom SGX PKI, signed collateral, SGX v3 and TDX v4 quotes.

It exists so the verifier tests can cover what real vectors cannot (revoked certificates,
expired CRLs, every TCB status, QE identity mismatches, ...) with dcap-qvl's
``verify_with_root_ca`` as the oracle. Every knob is a keyword argument; the private keys
live only in memory. It is not the product's simulated enclave, but it builds on that
enclave's builders (``ppml_kernel.tee.simulated``: certificates and CRLs, TCB Info and QE
Identity documents, report bodies, quote layout, collateral fields) and only supplies the
knobs, so the forger and the simulator cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ppml_kernel.tee.simulated.collateral import (
    collateral_document,
    compact,
    qe_identity_document,
    qe_level_entry,
    tcb_info_document,
    tcb_level_entry,
)
from ppml_kernel.tee.simulated.extension import SGX_EXTENSION_OID, sgx_extension_value
from ppml_kernel.tee.simulated.pki import build_certificate, build_crl, raw_ecdsa_sign
from ppml_kernel.tee.simulated.quote import (
    INTEL_QE_VENDOR_ID,
    TEE_TYPE_SGX,
    ecdsa_quote,
    qe_certification_data,
    qe_report_certification,
    qe_report_data,
    quote_header,
    report_body,
)

TEE_TYPE_TDX = 0x81
TCB_DATE = "2024-03-13T00:00:00Z"
EVALUATION_DATA_NUMBER = 17
QE_MRSIGNER = bytes.fromhex("8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff")


# --------------------------------------------------------------------------- helpers
def sgx_extension(
    cpusvn: bytes,
    pcesvn: int,
    fmspc: bytes,
    pce_id: bytes = b"\x00\x00",
    ppid: bytes = b"\x11" * 16,
) -> bytes:
    """Intel's SGX PCK certificate extension (OID 1.2.840.113741.1.13.1)."""
    return sgx_extension_value(
        ppid=ppid, cpu_svn=cpusvn, pce_svn=pcesvn, pce_id=pce_id, fmspc=fmspc
    )


def ts(unix: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix, tz=dt.timezone.utc)


def iso(unix: int) -> str:
    return ts(unix).strftime("%Y-%m-%dT%H:%M:%SZ")


_SIGS: dict[tuple[int, bytes], bytes] = {}


def raw_sig(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """r||s; memoised so that equal inputs give equal bytes (small test-vector diffs)."""
    cached = _SIGS.get((id(key), data))
    if cached is None:
        cached = _SIGS[(id(key), data)] = raw_ecdsa_sign(key, data)
    return cached


def raw_pub(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )[1:]


def name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ppml-kernel tests"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Nowhere"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "NA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "XX"),
        ]
    )


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# --------------------------------------------------------------------------- PKI
_PCK_CRL_DISTRIBUTION = x509.CRLDistributionPoints(
    [
        x509.DistributionPoint(
            [x509.UniformResourceIdentifier("https://pccs.invalid/pckcrl")], None, None, None
        )
    ]
)


@dataclass
class CertSpec:
    """Knobs for one certificate."""

    not_before: int
    not_after: int
    ca: bool | None  # None = no BasicConstraints extension
    path_length: int | None = None
    key_usage: str = "ca"  # "ca" (keyCertSign|cRLSign), "sign" (digitalSignature|nonRepudiation)
    extra_critical_oid: str | None = None
    serial: int | None = None


@dataclass
class Pki:
    """Root -> PCK platform CA -> PCK leaf; root -> TCB signing cert."""

    now: int
    root_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    ca_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    tcb_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    pck_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    att_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    root_name: str = "TEST SGX Root CA"

    def __post_init__(self) -> None:
        self._memo: dict[tuple, Any] = {}
        year = 365 * 86400
        self.root = self.make_cert(
            self.root_name,
            self.root_key,
            self.root_name,
            self.root_key,
            CertSpec(self.now - 5 * year, self.now + 20 * year, True, None, serial=1),
        )
        self.ca = self.make_cert(
            "TEST SGX PCK Platform CA",
            self.ca_key,
            self.root_name,
            self.root_key,
            CertSpec(self.now - 4 * year, self.now + 10 * year, True, 0, serial=2),
        )
        self.tcb = self.make_cert(
            "TEST SGX TCB Signing",
            self.tcb_key,
            self.root_name,
            self.root_key,
            CertSpec(self.now - 4 * year, self.now + 7 * year, False, key_usage="sign", serial=3),
        )
        self.leaf_spec = CertSpec(
            self.now - 2 * year, self.now + 5 * year, False, key_usage="sign", serial=4
        )

    @property
    def root_der(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.DER)

    def make_cert(
        self,
        cn: str,
        key: ec.EllipticCurvePrivateKey,
        issuer_cn: str,
        issuer_key: ec.EllipticCurvePrivateKey,
        spec: CertSpec,
        sgx_ext: bytes | None = None,
    ) -> x509.Certificate:
        extensions: list[tuple[x509.ExtensionType, bool]] = []
        if sgx_ext is not None:
            sgx = x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), sgx_ext)
            extensions += [(sgx, False), (_PCK_CRL_DISTRIBUTION, False)]
        if spec.extra_critical_oid:
            oid = x509.ObjectIdentifier(spec.extra_critical_oid)
            extensions.append((x509.UnrecognizedExtension(oid, b"\x05\x00"), True))
        return build_certificate(
            subject=name(cn),
            public_key=key.public_key(),
            issuer=name(issuer_cn),
            issuer_key=issuer_key,
            not_before=ts(spec.not_before),
            not_after=ts(spec.not_after),
            serial=spec.serial or None,
            basic_constraints=(
                None if spec.ca is None else x509.BasicConstraints(spec.ca, spec.path_length)
            ),
            ca_key_usage=spec.key_usage == "ca",
            extensions=extensions,
        )

    def leaf(
        self, cpusvn: bytes, pcesvn: int, fmspc: bytes, spec: CertSpec | None = None
    ) -> x509.Certificate:
        key = (
            "leaf",
            cpusvn,
            pcesvn,
            fmspc,
            repr(spec or self.leaf_spec),
            id(self.ca),
            id(self.ca_key),
        )
        if key not in self._memo:
            self._memo[key] = self._leaf(cpusvn, pcesvn, fmspc, spec)
        return self._memo[key]

    def _leaf(
        self, cpusvn: bytes, pcesvn: int, fmspc: bytes, spec: CertSpec | None = None
    ) -> x509.Certificate:
        return self.make_cert(
            "TEST SGX PCK Certificate",
            self.pck_key,
            "TEST SGX PCK Platform CA",
            self.ca_key,
            spec or self.leaf_spec,
            sgx_extension(cpusvn, pcesvn, fmspc),
        )

    def crl(
        self,
        issuer_cn: str,
        issuer_key: ec.EllipticCurvePrivateKey,
        this_update: int,
        next_update: int,
        revoked: tuple[int, ...] = (),
    ) -> bytes:
        key = ("crl", issuer_cn, id(issuer_key), this_update, next_update, revoked)
        if key not in self._memo:
            self._memo[key] = self._crl(issuer_cn, issuer_key, this_update, next_update, revoked)
        return self._memo[key]

    def _crl(
        self,
        issuer_cn: str,
        issuer_key: ec.EllipticCurvePrivateKey,
        this_update: int,
        next_update: int,
        revoked: tuple[int, ...],
    ) -> bytes:
        return build_crl(
            issuer=name(issuer_cn),
            issuer_key=issuer_key,
            this_update=ts(this_update),
            next_update=ts(next_update),
            number=1,
            revoked_serials=revoked,
        )


# --------------------------------------------------------------------------- collateral
def tcb_level(
    comps: list[int], pcesvn: int, status: str, advisories: list[str] | None = None
) -> dict:
    return tcb_level_entry(comps, pcesvn, status, TCB_DATE, advisories or ())


def default_tcb_levels() -> list[dict]:
    return [
        tcb_level([5] * 16, 13, "UpToDate"),
        tcb_level([4] * 16, 13, "SWHardeningNeeded", ["INTEL-SA-00615"]),
        tcb_level([3] * 16, 11, "OutOfDate", ["INTEL-SA-00477", "INTEL-SA-00615"]),
    ]


def qe_level(isvsvn: int, status: str, advisories: list[str] | None = None) -> dict:
    return qe_level_entry(isvsvn, status, TCB_DATE, advisories or ())


def tcb_info_json(
    now: int,
    fmspc: bytes,
    levels: list[dict],
    *,
    issue: int | None = None,
    next_update: int | None = None,
    version: int = 3,
    ident: str = "SGX",
    **extra: Any,
) -> str:
    """The simulator's TCB Info document with this PKI's defaults (valid now-1d..now+29d)."""
    return compact(
        tcb_info_document(
            fmspc=fmspc,
            issue=ts(issue if issue is not None else now - 86400),
            next_update=ts(next_update if next_update is not None else now + 29 * 86400),
            levels=levels,
            pce_id=b"\x00\x00",
            ident=ident,
            version=version,
            evaluation_data_number=EVALUATION_DATA_NUMBER,
            **extra,
        )
    )


def qe_identity_json(
    now: int,
    *,
    issue: int | None = None,
    next_update: int | None = None,
    levels: list[dict] | None = None,
    mrsigner: bytes = QE_MRSIGNER,
    isvprodid: int = 1,
    ident: str = "QE",
    version: int = 2,
    miscselect: str = "00000000",
    miscselect_mask: str = "FFFFFFFF",
    attributes: str = "11000000000000000000000000000000",
    attributes_mask: str = "FBFFFFFFFFFFFFFF0000000000000000",
) -> str:
    """The simulator's QE Identity document with this PKI's defaults."""
    return compact(
        qe_identity_document(
            issue=ts(issue if issue is not None else now - 86400),
            next_update=ts(next_update if next_update is not None else now + 29 * 86400),
            mrsigner=mrsigner,
            levels=levels
            or [qe_level(8, "UpToDate"), qe_level(6, "OutOfDate", ["INTEL-SA-00615"])],
            isvprodid=isvprodid,
            ident=ident,
            version=version,
            evaluation_data_number=EVALUATION_DATA_NUMBER,
            miscselect=miscselect,
            miscselect_mask=miscselect_mask,
            attributes=attributes,
            attributes_mask=attributes_mask,
        )
    )


def collateral_fields(
    pki: Pki,
    tcb_info: str,
    qe_identity: str,
    *,
    pck_crl: tuple[int, int, tuple[int, ...]] | None = None,
    root_crl: tuple[int, int, tuple[int, ...]] | None = None,
    signer: ec.EllipticCurvePrivateKey | None = None,
) -> dict[str, Any]:
    """The simulator's collateral fields over this PKI; CRL windows and signer are knobs."""
    now = pki.now
    p_this, p_next, p_revoked = pck_crl or (now - 86400, now + 29 * 86400, ())
    r_this, r_next, r_revoked = root_crl or (now - 86400, now + 365 * 86400, ())
    key = signer or pki.tcb_key
    return collateral_document(
        root_pem=pem(pki.root),
        platform_ca_pem=pem(pki.ca),
        tcb_signing_pem=pem(pki.tcb),
        root_ca_crl=pki.crl(pki.root_name, pki.root_key, r_this, r_next, r_revoked),
        pck_crl=pki.crl("TEST SGX PCK Platform CA", pki.ca_key, p_this, p_next, p_revoked),
        tcb_info=tcb_info,
        qe_identity=qe_identity,
        sign=lambda data: raw_sig(key, data),
    )


# --------------------------------------------------------------------------- quote
def enclave_report(
    *,
    cpusvn: bytes = b"\x05" * 16,
    miscselect: int = 0,
    attributes: bytes | None = None,
    mrenclave: bytes = b"\xaa" * 32,
    mrsigner: bytes = b"\xbb" * 32,
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    report_data: bytes = b"\x00" * 64,
) -> bytes:
    """The simulated enclave's report body layout, with this PKI's test defaults."""
    attributes = (
        attributes if attributes is not None else bytes.fromhex("05000000000000000700000000000000")
    )
    fixed = (cpusvn, 16), (attributes, 16), (mrenclave, 32), (mrsigner, 32), (report_data, 64)
    assert all(len(value) == size for value, size in fixed)  # struct would pad or cut
    return report_body(
        cpu_svn=cpusvn,
        misc_select=miscselect,
        attributes=attributes,
        mrenclave=mrenclave,
        mrsigner=mrsigner,
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        report_data=report_data,
    )


def build_quote(
    pki: Pki,
    pck_chain_pem: str,
    isv_report: bytes,
    *,
    qe_report_fields: dict[str, Any] | None = None,
    qe_svn: int = 8,
    pce_svn: int = 13,
    user_data: bytes = b"TEST-ONLY".ljust(20, b"\x00"),
    qe_auth: bytes = bytes(range(32)),
    bind_qe: bool = True,
    version: int = 3,
    vendor_id: bytes = INTEL_QE_VENDOR_ID,
) -> bytes:
    header = quote_header(
        version=version,
        tee_type=TEE_TYPE_SGX,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        vendor_id=vendor_id,
        user_data=user_data,
    )
    signed = header + isv_report
    att_pub = raw_pub(pki.att_key)
    qe_fields = {
        "cpusvn": b"\x05" * 16,
        "isv_prod_id": 1,
        "isv_svn": qe_svn,
        "mrsigner": QE_MRSIGNER,
        "attributes": bytes.fromhex("11000000000000000000000000000000"),
        "mrenclave": b"\xcc" * 32,
    }
    qe_fields.update(qe_report_fields or {})
    qe_rd = qe_report_data(att_pub, qe_auth) if bind_qe else bytes(64)
    qe_report = enclave_report(report_data=qe_rd, **qe_fields)
    certification = qe_certification_data(
        qe_report, raw_sig(pki.pck_key, qe_report), qe_auth, pck_chain_pem.encode()
    )
    return ecdsa_quote(signed, raw_sig(pki.att_key, signed), att_pub, certification)


@dataclass
class Scenario:
    """A complete synthetic case: quote, collateral and the root to verify with."""

    quote: bytes
    collateral: dict[str, Any]
    root_der: bytes


def scenario(
    pki: Pki,
    *,
    report_data: bytes = b"\x00" * 64,
    cpusvn: bytes = b"\x05" * 16,
    pcesvn: int = 13,
    fmspc: bytes = bytes.fromhex("00906ED50000"),
    tcb_fmspc: bytes | None = None,
    levels: list[dict] | None = None,
    tcb_kwargs: dict[str, Any] | None = None,
    qe_kwargs: dict[str, Any] | None = None,
    report_kwargs: dict[str, Any] | None = None,
    quote_kwargs: dict[str, Any] | None = None,
    leaf_spec: CertSpec | None = None,
    pck_crl: tuple[int, int, tuple[int, ...]] | None = None,
    root_crl: tuple[int, int, tuple[int, ...]] | None = None,
    swap_tcb_signer: ec.EllipticCurvePrivateKey | None = None,
) -> Scenario:
    now = pki.now
    leaf = pki.leaf(cpusvn, pcesvn, fmspc, leaf_spec)
    chain = pem(leaf) + pem(pki.ca) + pem(pki.root)
    report = enclave_report(report_data=report_data, **(report_kwargs or {}))
    quote = build_quote(pki, chain, report, **(quote_kwargs or {}))
    tcb_info = tcb_info_json(
        now, tcb_fmspc or fmspc, levels or default_tcb_levels(), **(tcb_kwargs or {})
    )
    qe_identity = qe_identity_json(now, **(qe_kwargs or {}))
    collateral = collateral_fields(
        pki, tcb_info, qe_identity, pck_crl=pck_crl, root_crl=root_crl, signer=swap_tcb_signer
    )
    return Scenario(quote, collateral, pki.root_der)


def verdict(
    quote: bytes, collateral: dict[str, Any], root_der: bytes | None, now: int
) -> dict[str, Any]:
    """dcap-qvl's verdict: {"status", "advisory_ids"} or {"error"}."""
    import dcap_qvl

    try:
        col = dcap_qvl.QuoteCollateralV3.from_json(json.dumps(collateral))
        if root_der is None:
            r = dcap_qvl.verify(quote, col, now)
        else:
            r = dcap_qvl.verify_with_root_ca(quote, col, root_der, now)
    except ValueError as exc:
        return {"error": str(exc)}
    return {"status": r.status, "advisory_ids": list(r.advisory_ids)}


class SynthAttester:
    """An Attester over this test PKI: real v3 quotes with the requested REPORT_DATA."""

    kind = "test-synth"
    simulated = True
    description = "test PKI from tests/dcap_synth.py"

    def __init__(self, pki: Pki | None = None, **scenario_kwargs: Any) -> None:
        import time

        self.pki = pki or Pki(now=int(time.time()))
        self.scenario_kwargs = scenario_kwargs
        self._collateral: dict | None = None
        self.quotes = 0

    def quote(self, report_data: bytes) -> bytes:
        sc = scenario(self.pki, report_data=report_data, **self.scenario_kwargs)
        self._collateral = sc.collateral
        self.quotes += 1
        return sc.quote

    def collateral(self) -> str | None:
        return json.dumps(self._collateral)

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "simulated": True, "description": self.description}


def _register_attester() -> None:
    from ppml_kernel.tee.base import Attester

    Attester.register(SynthAttester)


_register_attester()


# --------------------------------------------------------------------------- TDX
TD_QE_ISVPRODID = 2
TDX_MODULE_MRSIGNER = b"\x5a" * 48


def td_report(
    *,
    tee_tcb_svn: bytes = bytes([3, 1] + [2] * 14),
    mr_signer_seam: bytes = TDX_MODULE_MRSIGNER,
    seam_attributes: bytes = b"\x00" * 8,
    td_attributes: bytes = bytes.fromhex("0000001000000000"),
    mr_td: bytes = b"\x01" * 48,
    mr_config_id: bytes = b"\x02" * 48,
    mr_owner: bytes = b"\x03" * 48,
    rtmr: tuple[bytes, ...] = (b"\x04" * 48, b"\x05" * 48, b"\x06" * 48, b"\x07" * 48),
    report_data: bytes = b"\x00" * 64,
) -> bytes:
    """A TD 1.0 report body (584 bytes): TEE_TCB_SVN .. REPORT_DATA."""
    body = (
        tee_tcb_svn + b"\x08" * 48 + mr_signer_seam + seam_attributes + td_attributes
        + b"\xe7" + b"\x00" * 7 + mr_td + mr_config_id + mr_owner + b"\x00" * 48
        + b"".join(rtmr) + report_data
    )
    assert len(body) == 584
    return body


def build_tdx_quote(pki: Pki, pck_chain_pem: str, body: bytes, *, qe_svn: int = 8) -> bytes:
    """A version 4 TDX quote with QE report certification data (type 6) around a PCK chain."""
    header = quote_header(
        version=4, tee_type=TEE_TYPE_TDX, qe_svn=0, pce_svn=0, user_data=b"\x00" * 20
    )
    signed = header + body
    att_pub = raw_pub(pki.att_key)
    qe_auth = bytes(range(32))
    qe_report = enclave_report(
        report_data=qe_report_data(att_pub, qe_auth),
        cpusvn=b"\x05" * 16,
        isv_prod_id=TD_QE_ISVPRODID,
        isv_svn=qe_svn,
        mrsigner=QE_MRSIGNER,
        attributes=bytes.fromhex("11000000000000000000000000000000"),
        mrenclave=b"\xcc" * 32,
    )
    inner = qe_certification_data(
        qe_report, raw_sig(pki.pck_key, qe_report), qe_auth, pck_chain_pem.encode()
    )
    certification = qe_report_certification(inner)
    return ecdsa_quote(signed, raw_sig(pki.att_key, signed), att_pub, certification)


def tdx_tcb_level(status: str, advisories: list[str] | None = None, tdx_svn: int = 2) -> dict:
    level = tcb_level([5] * 16, 13, status, advisories)
    level["tcb"]["tdxtcbcomponents"] = [{"svn": tdx_svn}] * 16
    return level


def tdx_scenario(
    pki: Pki,
    *,
    levels: list[dict] | None = None,
    module_levels: list[dict] | None = None,
    qe_levels: list[dict] | None = None,
    report_kwargs: dict[str, Any] | None = None,
) -> Scenario:
    """A complete synthetic TDX case (TCB Info v3 with a module identity TDX_01)."""
    now = pki.now
    fmspc = bytes.fromhex("00806F050000")
    leaf = pki.leaf(b"\x05" * 16, 13, fmspc)
    chain = pem(leaf) + pem(pki.ca) + pem(pki.root)
    quote = build_tdx_quote(pki, chain, td_report(**(report_kwargs or {})))
    module = {
        "mrsigner": TDX_MODULE_MRSIGNER.hex().upper(),
        "attributes": "0000000000000000",
        "attributesMask": "FFFFFFFFFFFFFFFF",
    }
    tcb_info = tcb_info_json(
        now,
        fmspc,
        levels or [tdx_tcb_level("UpToDate")],
        ident="TDX",
        tdxModule=module,
        tdxModuleIdentities=[
            {"id": "TDX_01", **module, "tcbLevels": module_levels or [qe_level(3, "UpToDate")]}
        ],
    )
    qe_identity = qe_identity_json(
        now, ident="TD_QE", isvprodid=TD_QE_ISVPRODID, levels=qe_levels or [qe_level(8, "UpToDate")]
    )
    return Scenario(quote, collateral_fields(pki, tcb_info, qe_identity), pki.root_der)
