"""Write tests/data/tamper-vectors.json: variants of the DCAP vectors with dcap-qvl's verdicts.

Two kinds of cases:
- real vectors (tests/data/vectors) with mutations: byte changes in every part of the
  quote, edits of the signed collateral, swapped CRLs, other verification times, the
  wrong root. Stored as mutation lists, so the file stays small.
- a synthetic SGX PKI (tests/support/dcap_synth.py, custom root) to reach what real data cannot:
  revoked and expired certificates and CRLs, every TCB status, QE Identity mismatches,
  debug enclaves. Re-signed fields are stored in full.

`expected` is what dcap-qvl (the kernel-side verifier) says: {"status", "advisory_ids"}
or {"error"}. The TypeScript verifier must agree on every case
(extensions/jupyterlab-ppml/test/tamper.test.ts); tests/attestation/test_tamper_vectors.py re-checks
the recorded verdicts against the installed dcap-qvl.

Run: PYTHONPATH=.:tests python tests/tools/make_tamper_vectors.py
"""

from __future__ import annotations

import copy
import functools
import json
import struct
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import dcap_synth as s  # noqa: E402

from ppml_kernel.attestation.policy import KNOWN_TCB_STATUSES  # noqa: E402

VECTORS = ROOT / "tests" / "data" / "vectors"
DAY = 86400
SYNTH_NOW = 1767225600
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


# --------------------------------------------------------------------------- mutations
def read_quote(rel: str) -> bytes:
    p = VECTORS / rel
    if rel.endswith((".hex", ".txt")):
        return bytes.fromhex(p.read_text().strip().removeprefix("0x"))
    return p.read_bytes()


def apply(quote: bytes, collateral: dict, mutations: list[dict]) -> tuple[bytes, dict]:
    """The mutation language shared with extensions/jupyterlab-ppml/test/mutate.ts."""
    q = bytearray(quote)
    col = copy.deepcopy(collateral)
    for m in mutations:
        op = m["op"]
        if m["target"] == "quote":
            if op == "xor":
                q[m["offset"]] ^= m["mask"]
            elif op == "set_byte":
                q[m["offset"]] = m["value"]
            elif op == "truncate":
                del q[m["length"] :]
            elif op == "append":
                q += bytes.fromhex(m["hex"])
            elif op == "set_u16":
                q[m["offset"] : m["offset"] + 2] = struct.pack("<H", m["value"])
            elif op == "set_u32":
                q[m["offset"] : m["offset"] + 4] = struct.pack("<I", m["value"])
            else:
                raise ValueError(op)
        else:
            f = m["field"]
            if op == "set":
                col[f] = m["value"]
            elif op == "delete":
                del col[f]
            elif op == "replace_text":
                assert m["old"] in col[f], (f, m["old"])
                col[f] = col[f].replace(m["old"], m["new"], 1)
            elif op == "xor_hex":
                b = bytearray(bytes.fromhex(col[f]))
                b[m["offset"] if m["offset"] >= 0 else len(b) + m["offset"]] ^= m["mask"]
                col[f] = b.hex()
            elif op == "copy":
                col[f] = col[m["from"]]
            else:
                raise ValueError(op)
    return bytes(q), col


def layout(q: bytes) -> dict[str, int]:
    """Absolute offsets of the quote's parts (SGX v3, TDX v4/v5)."""
    version = struct.unpack_from("<H", q, 0)[0]
    tee = struct.unpack_from("<I", q, 4)[0]
    off: dict[str, int] = {"version": 0, "ak_type": 2, "tee_type": 4, "vendor": 12, "user_data": 28}
    body = 48
    if version == 5:
        body_type = struct.unpack_from("<H", q, 48)[0]
        body = 54
        body_len = {1: 384, 2: 584, 3: 648}[body_type]
    else:
        body_len = 384 if tee == 0 else 584
    off["body"] = body
    if tee == 0:
        off.update(attributes=body + 48, measurement=body + 64, report_data=body + 320)
    else:
        off.update(attributes=body + 120, measurement=body + 136, report_data=body + 520)
    signed = body + body_len
    off["auth_len"] = signed
    a = signed + 4
    off["isv_sig"] = a
    off["att_key"] = a + 64
    qe = a + 128
    if version != 3:
        off["outer_cert_type"] = qe
        qe += 6
    off["qe_report"] = qe
    off["qe_report_isvsvn"] = qe + 258
    off["qe_sig"] = qe + 384
    off["qe_auth_len"] = qe + 448
    auth_len = struct.unpack_from("<H", q, qe + 448)[0]
    off["qe_auth"] = qe + 450
    c = qe + 450 + auth_len
    off["cert_type"] = c
    off["cert_len"] = c + 2
    off["cert_data"] = c + 6
    off["cert_data_len"] = struct.unpack_from("<I", q, c + 2)[0]
    return off


def pem_positions(q: bytes, off: dict[str, int]) -> list[int]:
    """Offsets of one base64 character inside each PEM block of the quote's chain."""
    data = q[off["cert_data"] : off["cert_data"] + off["cert_data_len"]]
    out = []
    start = 0
    while True:
        i = data.find(b"-----BEGIN CERTIFICATE-----", start)
        if i < 0:
            break
        j = data.find(b"\n", i) + 1 + 200  # well inside the body, away from the header
        out.append(off["cert_data"] + j)
        start = data.find(b"-----END CERTIFICATE-----", i) + 1
    return out


def other_b64(c: int) -> int:
    ch = chr(c)
    return ord(B64[(B64.index(ch) + 1) % 64])


def q_mut(**kw: Any) -> dict:
    return {"target": "quote", **kw}


def c_mut(field: str, **kw: Any) -> dict:
    return {"target": "collateral", "field": field, **kw}


# --------------------------------------------------------------------------- real vectors
def real_cases() -> list[dict]:
    manifest = json.loads((VECTORS / "MANIFEST.json").read_text())
    cases = []
    for v in manifest:
        if "collateral" not in v:
            continue
        q = read_quote(v["quote"])
        off = layout(q)
        base = {"vector": v["quote"], "collateral": v["collateral"], "verify_at": v["verify_at"]}
        name = v["quote"]
        muts: list[tuple[str, list[dict], dict]] = [
            ("unchanged", [], {}),
            (
                "version-bumped",
                [q_mut(op="set_u16", offset=0, value=5 if v["tee"] == "TDX" else 4)],
                {},
            ),
            ("attestation-key-type", [q_mut(op="xor", offset=off["ak_type"], mask=1)], {}),
            ("qe-vendor-id", [q_mut(op="xor", offset=off["vendor"], mask=0x10)], {}),
            ("user-data", [q_mut(op="xor", offset=off["user_data"], mask=1)], {}),
            ("measurement", [q_mut(op="xor", offset=off["measurement"], mask=1)], {}),
            ("report-data", [q_mut(op="xor", offset=off["report_data"] + 63, mask=0x80)], {}),
            (
                "debug-bit",
                [
                    q_mut(
                        op="xor", offset=off["attributes"], mask=0x02 if v["tee"] == "SGX" else 0x01
                    )
                ],
                {},
            ),
            ("isv-signature", [q_mut(op="xor", offset=off["isv_sig"] + 5, mask=1)], {}),
            ("attestation-key", [q_mut(op="xor", offset=off["att_key"] + 10, mask=1)], {}),
            ("qe-report", [q_mut(op="xor", offset=off["qe_report_isvsvn"], mask=1)], {}),
            ("qe-report-signature", [q_mut(op="xor", offset=off["qe_sig"] + 40, mask=1)], {}),
            ("qe-auth-data", [q_mut(op="xor", offset=off["qe_auth"], mask=1)], {}),
            ("cert-type", [q_mut(op="set_u16", offset=off["cert_type"], value=4)], {}),
            (
                "auth-length-too-big",
                [q_mut(op="set_u32", offset=off["auth_len"], value=len(q))],
                {},
            ),
            ("truncated-by-one", [q_mut(op="truncate", length=len(q) - 1)], {}),
            ("truncated-to-header", [q_mut(op="truncate", length=48)], {}),
            ("trailing-bytes", [q_mut(op="append", hex="00ff00ff")], {}),
            (
                "tcb-info-edited",
                [
                    c_mut(
                        "tcb_info",
                        op="replace_text",
                        old='"tcbEvaluationDataNumber":',
                        new='"tcbEvaluationDataNumber": ',
                    )
                ],
                {},
            ),
            (
                "tcb-info-signature",
                [c_mut("tcb_info_signature", op="xor_hex", offset=3, mask=1)],
                {},
            ),
            (
                "qe-identity-edited",
                [c_mut("qe_identity", op="replace_text", old='"isvprodid":', new='"isvprodid": ')],
                {},
            ),
            (
                "qe-identity-signature",
                [c_mut("qe_identity_signature", op="xor_hex", offset=40, mask=1)],
                {},
            ),
            ("pck-crl-signature", [c_mut("pck_crl", op="xor_hex", offset=-2, mask=1)], {}),
            ("root-crl-signature", [c_mut("root_ca_crl", op="xor_hex", offset=-2, mask=1)], {}),
            (
                "crls-swapped",
                [
                    c_mut("pck_crl", op="copy", **{"from": "root_ca_crl"}),
                    c_mut("root_ca_crl", op="set", value=None),
                ],
                {},
            ),
            ("pck-crl-is-root-crl", [c_mut("pck_crl", op="copy", **{"from": "root_ca_crl"})], {}),
            (
                "pck-crl-issuer-chain-ignored",
                [c_mut("pck_crl_issuer_chain", op="set", value="not a chain")],
                {},
            ),
            ("tcb-chain-without-root-copy", [], {"tcb_chain_leaf_only": True}),
            ("tcb-chain-empty", [c_mut("tcb_info_issuer_chain", op="set", value="")], {}),
            ("tcb-info-missing", [c_mut("tcb_info", op="delete")], {}),
            ("one-year-later", [], {"verify_at": v["verify_at"] + 365 * DAY}),
            ("one-year-earlier", [], {"verify_at": v["verify_at"] - 365 * DAY}),
            ("wrong-root", [], {"root": "synthetic"}),
        ]
        pems = pem_positions(q, off)
        for i, pos in enumerate(pems):
            label = ["pck-leaf", "pck-ca", "root-copy"][i] if i < 3 else f"pem-{i}"
            muts.append(
                (
                    f"pem-{label}-changed",
                    [q_mut(op="set_byte", offset=pos, value=other_b64(q[pos]))],
                    {},
                )
            )
        for suffix, mutations, extra in muts:
            case = {"id": f"{name}/{suffix}", "base": base, "mutations": mutations}
            if extra.get("verify_at"):
                case["verify_at"] = extra["verify_at"]
            if extra.get("root"):
                case["root"] = extra["root"]
            if extra.get("tcb_chain_leaf_only"):
                col = json.loads((VECTORS / v["collateral"]).read_text())
                first = col["tcb_info_issuer_chain"].split("-----END CERTIFICATE-----")[0]
                case["mutations"] = [
                    c_mut(
                        "tcb_info_issuer_chain",
                        op="set",
                        value=first + "-----END CERTIFICATE-----\n",
                    )
                ]
            if suffix == "crls-swapped":
                col = json.loads((VECTORS / v["collateral"]).read_text())
                case["mutations"] = [
                    c_mut("pck_crl", op="set", value=col["root_ca_crl"]),
                    c_mut("root_ca_crl", op="set", value=col["pck_crl"]),
                ]
            cases.append(case)
    return cases


# --------------------------------------------------------------------------- synthetic
def synthetic(pki: s.Pki) -> tuple[dict, list[dict]]:
    """One synthetic base plus re-signed variants (only changed fields are stored)."""
    now = pki.now
    base = s.scenario(pki)
    bases = {
        "sgx": {
            "quote": base.quote.hex(),
            "collateral": base.collateral,
            "root_der": pki.root_der.hex(),
            "verify_at": now,
        }
    }
    cases: list[dict] = []

    def add(
        cid: str, sc: s.Scenario | None = None, mutations: list[dict] | None = None, **extra: Any
    ) -> None:
        muts = list(mutations or [])
        case: dict[str, Any] = {"id": f"synthetic/{cid}", "base": {"synthetic": "sgx"}}
        if sc is not None:
            if sc.quote != base.quote:
                case["quote"] = sc.quote.hex()
            for k, val in sc.collateral.items():
                if base.collateral.get(k) != val:
                    muts.append(c_mut(k, op="set", value=val))
        case["mutations"] = muts
        case.update(extra)
        cases.append(case)

    lvl = s.tcb_level
    add("unchanged")
    add("intel-root", root="intel")
    add("one-day-later", verify_at=now + DAY)
    add("thirty-days-later", verify_at=now + 30 * DAY)
    for status in KNOWN_TCB_STATUSES:
        add(
            f"platform-{status}",
            s.scenario(pki, levels=[lvl([5] * 16, 13, status, ["INTEL-SA-00001"])]),
        )
    add("cpusvn-matches-second-level", s.scenario(pki, cpusvn=b"\x04" * 16))
    add("cpusvn-matches-third-level", s.scenario(pki, cpusvn=bytes([3] * 15 + [9]), pcesvn=11))
    add("cpusvn-below-all-levels", s.scenario(pki, cpusvn=bytes([2] + [9] * 15)))
    add("pcesvn-below-all-levels", s.scenario(pki, pcesvn=10))
    add("pcesvn-skips-first-level", s.scenario(pki, pcesvn=12))
    add("levels-in-ascending-order", s.scenario(pki, levels=list(reversed(s.default_tcb_levels()))))
    add("component-count-15", s.scenario(pki, levels=[lvl([5] * 15, 13, "UpToDate")]))
    add("fmspc-mismatch", s.scenario(pki, tcb_fmspc=bytes.fromhex("00906ED50001")))
    add("tcb-info-id-tdx", s.scenario(pki, tcb_kwargs={"ident": "TDX"}))
    add("tcb-info-expired", s.scenario(pki, tcb_kwargs={"next_update": now - 1}))
    add("tcb-info-next-update-now", s.scenario(pki, tcb_kwargs={"next_update": now}))
    add("tcb-info-issued-in-future", s.scenario(pki, tcb_kwargs={"issue": now + 1}))
    add("tcb-info-unknown-status", s.scenario(pki, levels=[lvl([5] * 16, 13, "Excellent")]))
    add("qe-identity-expired", s.scenario(pki, qe_kwargs={"next_update": now - 1}))
    add("qe-identity-id-td-qe", s.scenario(pki, qe_kwargs={"ident": "TD_QE"}))
    add("qe-identity-version-3", s.scenario(pki, qe_kwargs={"version": 3}))
    add("qe-mrsigner-mismatch", s.scenario(pki, qe_kwargs={"mrsigner": b"\x01" * 32}))
    add("qe-isvprodid-mismatch", s.scenario(pki, qe_kwargs={"isvprodid": 2}))
    add("qe-miscselect-mismatch", s.scenario(pki, qe_kwargs={"miscselect": "01000000"}))
    add(
        "qe-miscselect-masked-out",
        s.scenario(pki, qe_kwargs={"miscselect": "01000000", "miscselect_mask": "FEFFFFFF"}),
    )
    add(
        "qe-attributes-mismatch",
        s.scenario(pki, qe_kwargs={"attributes": "13000000000000000000000000000000"}),
    )
    add("qe-isvsvn-second-level", s.scenario(pki, quote_kwargs={"qe_svn": 7}))
    add("qe-isvsvn-below-all", s.scenario(pki, quote_kwargs={"qe_svn": 5}))
    add(
        "qe-levels-merge",
        s.scenario(
            pki,
            levels=[lvl([5] * 16, 13, "SWHardeningNeeded", ["INTEL-SA-00002", "INTEL-SA-00001"])],
            qe_kwargs={
                "levels": [s.qe_level(8, "OutOfDate", ["INTEL-SA-00001", "INTEL-SA-00003"])]
            },
        ),
    )
    add(
        "qe-debug",
        s.scenario(
            pki,
            quote_kwargs={
                "qe_report_fields": {
                    "attributes": bytes.fromhex("13000000000000000000000000000000")
                }
            },
            qe_kwargs={"attributes_mask": "F9FFFFFFFFFFFFFF0000000000000000"},
        ),
    )
    add("qe-report-unbound", s.scenario(pki, quote_kwargs={"bind_qe": False}))
    add("qe-auth-data-31-bytes", s.scenario(pki, quote_kwargs={"qe_auth": bytes(31)}))
    add("qe-auth-data-33-bytes", s.scenario(pki, quote_kwargs={"qe_auth": bytes(33)}))
    add(
        "isv-debug",
        s.scenario(
            pki, report_kwargs={"attributes": bytes.fromhex("07000000000000000700000000000000")}
        ),
    )
    add(
        "isv-production-attributes",
        s.scenario(
            pki, report_kwargs={"attributes": bytes.fromhex("04000000000000000300000000000000")}
        ),
    )
    add("vendor-id-not-intel", s.scenario(pki, quote_kwargs={"vendor_id": b"\x00" * 16}))
    add("quote-version-4-sgx", s.scenario(pki, quote_kwargs={"version": 4}))
    spec = s.CertSpec
    pck_leaf = functools.partial(spec, key_usage="sign", serial=4)
    for cid, leaf_spec in [
        ("pck-leaf-expired", pck_leaf(now - DAY, now - 1, False)),
        ("pck-leaf-not-after-now", pck_leaf(now - DAY, now, False)),
        ("pck-leaf-not-yet-valid", pck_leaf(now + 1, now + DAY, False)),
        ("pck-leaf-is-ca", pck_leaf(now - DAY, now + DAY, True)),
        ("pck-leaf-without-basic-constraints", pck_leaf(now - DAY, now + DAY, None)),
        (
            "pck-leaf-unknown-critical-extension",
            pck_leaf(now - DAY, now + DAY, False, extra_critical_oid="1.2.3.4"),
        ),
    ]:
        add(cid, s.scenario(pki, leaf_spec=leaf_spec))
    add("pck-leaf-revoked", s.scenario(pki, pck_crl=(now - DAY, now + 20 * DAY, (4,))))
    add("pck-leaf-serial-in-root-crl", s.scenario(pki, root_crl=(now - DAY, now + 300 * DAY, (4,))))
    add("pck-ca-revoked", s.scenario(pki, root_crl=(now - DAY, now + 300 * DAY, (2,))))
    add("tcb-signer-revoked", s.scenario(pki, root_crl=(now - DAY, now + 300 * DAY, (3,))))
    add("root-revoked", s.scenario(pki, root_crl=(now - DAY, now + 300 * DAY, (1,))))
    add("pck-crl-expired", s.scenario(pki, pck_crl=(now - 10 * DAY, now - 1, ())))
    add("pck-crl-next-update-now", s.scenario(pki, pck_crl=(now - 10 * DAY, now, ())))
    add("pck-crl-this-update-in-future", s.scenario(pki, pck_crl=(now + DAY, now + 30 * DAY, ())))
    add("root-crl-expired", s.scenario(pki, root_crl=(now - 10 * DAY, now - 1, ())))
    add(
        "root-crl-this-update-in-future", s.scenario(pki, root_crl=(now + DAY, now + 300 * DAY, ()))
    )
    add("pck-crl-from-root", mutations=[c_mut("pck_crl", op="copy", **{"from": "root_ca_crl"})])
    add("root-crl-from-pck-ca", mutations=[c_mut("root_ca_crl", op="copy", **{"from": "pck_crl"})])
    add(
        "root-crl-signed-by-ca-key",
        mutations=[
            c_mut(
                "root_ca_crl",
                op="set",
                value=pki.crl(pki.root_name, pki.ca_key, now - DAY, now + DAY).hex(),
            )
        ],
    )
    add(
        "root-crl-other-issuer",
        mutations=[
            c_mut(
                "root_ca_crl",
                op="set",
                value=pki.crl("Other", pki.root_key, now - DAY, now + DAY).hex(),
            )
        ],
    )
    add("tcb-signed-by-other-key", s.scenario(pki, swap_tcb_signer=pki.ca_key))
    add(
        "tcb-chain-reversed",
        mutations=[
            c_mut("tcb_info_issuer_chain", op="set", value=s.pem(pki.root) + s.pem(pki.tcb))
        ],
    )
    add(
        "tcb-chain-junk-around",
        mutations=[
            c_mut("tcb_info_issuer_chain", op="set", value="junk\n" + s.pem(pki.tcb) + "more junk")
        ],
    )
    add(
        "tcb-chain-wrong-pem-label",
        mutations=[
            c_mut(
                "tcb_info_issuer_chain",
                op="set",
                value=s.pem(pki.tcb).replace("BEGIN CERTIFICATE", "BEGIN X509 CRL"),
            )
        ],
    )
    add(
        "pck-chain-from-collateral",
        mutations=[
            c_mut(
                "pck_certificate_chain",
                op="set",
                value=s.pem(pki.leaf(b"\x05" * 16, 13, bytes.fromhex("00906ED50000")))
                + s.pem(pki.ca),
            )
        ],
    )
    add(
        "pck-chain-from-collateral-garbage",
        mutations=[c_mut("pck_certificate_chain", op="set", value="garbage")],
    )
    # Certificates of the PKI itself with other properties (all issued by the root).
    subjects = {
        "ca": ("TEST SGX PCK Platform CA", pki.ca_key),
        "tcb": ("TEST SGX TCB Signing", pki.tcb_key),
        "root": (pki.root_name, pki.root_key),
    }
    for cid, attr, cert_spec in [
        (
            "pck-ca-without-crl-sign",
            "ca",
            spec(now - DAY, now + DAY, True, 0, key_usage="sign", serial=2),
        ),
        ("pck-ca-not-a-ca", "ca", spec(now - DAY, now + DAY, False, None, serial=2)),
        ("pck-ca-expired", "ca", spec(now - 9 * DAY, now - DAY, True, 0, serial=2)),
        (
            "tcb-signer-is-ca",
            "tcb",
            spec(now - DAY, now + DAY, True, None, key_usage="sign", serial=3),
        ),
        (
            "tcb-signer-expired",
            "tcb",
            spec(now - 9 * DAY, now - DAY, False, key_usage="sign", serial=3),
        ),
        (
            "root-expired-anchor-dates-ignored",
            "root",
            spec(now - 9 * DAY, now - DAY, True, None, serial=1),
        ),
    ]:
        subject, key = subjects[attr]
        saved = getattr(pki, attr)
        setattr(pki, attr, pki.make_cert(subject, key, pki.root_name, pki.root_key, cert_spec))
        sc = s.scenario(pki)
        if attr == "root":
            add(cid, sc, root_der=pki.root_der.hex())
        else:
            add(cid, sc)
        setattr(pki, attr, saved)
    strictness_cases(pki, base, add)
    tdx_cases(pki, bases, cases)
    return bases, cases


def tdx_cases(pki: s.Pki, bases: dict, cases: list[dict]) -> None:
    """A synthetic TDX base: every platform x TDX module status, and QE statuses on TDX."""
    base = s.tdx_scenario(pki)
    bases["tdx"] = {
        "quote": base.quote.hex(),
        "collateral": base.collateral,
        "root_der": pki.root_der.hex(),
        "verify_at": pki.now,
    }

    def add(cid: str, sc: s.Scenario) -> None:
        muts = [c_mut(k, op="set", value=v) for k, v in sc.collateral.items()
                if base.collateral.get(k) != v]
        case: dict[str, Any] = {"id": f"synthetic-tdx/{cid}", "base": {"synthetic": "tdx"}}
        if sc.quote != base.quote:
            case["quote"] = sc.quote.hex()
        case["mutations"] = muts
        cases.append(case)

    add("unchanged", base)
    for p in KNOWN_TCB_STATUSES:
        for m in KNOWN_TCB_STATUSES:
            add(
                f"merge-platform-{p}-module-{m}",
                s.tdx_scenario(
                    pki,
                    levels=[s.tdx_tcb_level(p, ["INTEL-SA-00001"])],
                    module_levels=[s.qe_level(3, m, ["INTEL-SA-00002", "INTEL-SA-00001"])],
                ),
            )
    for q in KNOWN_TCB_STATUSES:
        add(
            f"qe-{q}-platform-ConfigurationNeeded",
            s.tdx_scenario(
                pki,
                levels=[s.tdx_tcb_level("ConfigurationNeeded")],
                qe_levels=[s.qe_level(8, q, ["INTEL-SA-00003"])],
            ),
        )
    add(
        "module-isvsvn-second-level",
        s.tdx_scenario(
            pki,
            module_levels=[
                s.qe_level(3, "UpToDate"),
                s.qe_level(2, "OutOfDate", ["INTEL-SA-00004"]),
            ],
            report_kwargs={"tee_tcb_svn": bytes([2, 1] + [2] * 14)},
        ),
    )
    add(
        "module-mrsigner-mismatch",
        s.tdx_scenario(pki, report_kwargs={"mr_signer_seam": b"\x00" * 48}),
    )
    add(
        "td-debug",
        s.tdx_scenario(pki, report_kwargs={"td_attributes": bytes.fromhex("0100001000000000")}),
    )
    add(
        "td-sept-ve-disable-clear",
        s.tdx_scenario(pki, report_kwargs={"td_attributes": bytes(8)}),
    )
    def edited(cid: str, edit: Any) -> None:
        info = json.loads(base.collateral["tcb_info"])
        edit(info)
        text = json.dumps(info, separators=(",", ":"))
        col = {**base.collateral, "tcb_info": text}
        col["tcb_info_signature"] = s.raw_sig(pki.tcb_key, text.encode()).hex()
        add(cid, s.Scenario(base.quote, col, pki.root_der))

    def set_date(path: str, value: str) -> Any:
        def edit(info: dict) -> None:
            levels = (
                info["tcbLevels"] if path == "platform"
                else info["tdxModuleIdentities"][0]["tcbLevels"]
            )
            levels[0]["tcbDate"] = value
        return edit

    # dcap-qvl parses the matched TDX levels' tcbDate (never SGX ones).
    for where in ("platform", "module"):
        edited(f"{where}-tcb-date-garbage", set_date(where, "garbage"))
        edited(f"{where}-tcb-date-1969", set_date(where, "1969-12-31T23:59:59Z"))
        edited(f"{where}-tcb-date-offset-24", set_date(where, "2024-03-13T00:00:00+24:00"))
        edited(f"{where}-tcb-date-9999", set_date(where, "9999-12-31T23:59:59Z"))
    edited("module-version-without-identities", lambda info: info.pop("tdxModuleIdentities"))
    edited("module-identities-empty", lambda info: info.update(tdxModuleIdentities=[]))
    # With a module version, TDX components 0 and 1 belong to the module identity.
    for cid, first in (
        ("tdx-components-0-1-skipped", [9, 9]),
        ("tdx-component-2-checked", [3, 1, 3]),
    ):
        comps = first + [2] * (16 - len(first))
        edited(
            cid,
            lambda info, comps=comps: info["tcbLevels"][0]["tcb"].update(
                tdxtcbcomponents=[{"svn": c} for c in comps]
            ),
        )
    add(
        "tdx-components-below",
        s.tdx_scenario(pki, levels=[s.tdx_tcb_level("UpToDate", tdx_svn=3)]),
    )


def strictness_cases(pki: s.Pki, base: s.Scenario, add: Any) -> None:
    """Issue 11 items 4 and 5: dcap-qvl's status convergence and its parsing rules.

    Every platform status with every QE status, and signed TCB Info / QE Identity texts
    that a lax parser reads differently from serde_json and chrono (floats as integers,
    duplicate keys, out-of-range UTC offsets, years before 1970, leap seconds), re-signed
    with the synthetic TCB signing key so only the parsing decides.
    """
    now = pki.now
    lvl = s.tcb_level
    for p in KNOWN_TCB_STATUSES:
        for q in KNOWN_TCB_STATUSES:
            add(
                f"merge-platform-{p}-qe-{q}",
                s.scenario(
                    pki,
                    levels=[lvl([5] * 16, 13, p, ["INTEL-SA-00001", "INTEL-SA-00002"])],
                    qe_kwargs={
                        "levels": [s.qe_level(8, q, ["INTEL-SA-00003", "INTEL-SA-00001"])]
                    },
                ),
            )

    def signed(field: str, text: str) -> s.Scenario:
        col = dict(base.collateral)
        col[field] = text
        col[f"{field}_signature"] = s.raw_sig(pki.tcb_key, text.encode()).hex()
        return s.Scenario(base.quote, col, pki.root_der)

    tcb = base.collateral["tcb_info"]
    qe = base.collateral["qe_identity"]
    issue, nxt = f'"issueDate":"{s.iso(now - DAY)}"', f'"nextUpdate":"{s.iso(now + 29 * DAY)}"'
    assert issue in tcb and nxt in tcb and issue in qe
    edits = {
        "float-evaluation-number": (
            '"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":17.0'
        ),
        "exponent-evaluation-number": (
            '"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":1.7e1'
        ),
        "negative-zero-tcb-type": ('"tcbType":0', '"tcbType":-0'),
        "float-version": ('"version":', '"version":3.0,"x":'),
        "float-pcesvn": ('"pcesvn":13', '"pcesvn":13.0'),
        "float-svn": ('{"svn":5}', '{"svn":5e0}'),
        "leading-zero": ('"tcbType":0', '"tcbType":00'),
        "duplicate-status-revoked-first": (
            '"tcbStatus":"UpToDate"', '"tcbStatus":"Revoked","tcbStatus":"UpToDate"'
        ),
        "duplicate-top-level-key": ('"tcbType":0', '"tcbType":0,"tcbType":0'),
        "duplicate-nested-key": ('"pcesvn":13', '"pcesvn":13,"pcesvn":13'),
        "unknown-key-ignored": ('"tcbType":0', '"tcbType":0,"comment":[1.5,{"a":null}]'),
        "trailing-garbage": ('"tcbLevels":', '"tcbLevels":'),
        "next-update-past-with-offset-minus-99": (
            nxt, f'"nextUpdate":"{s.iso(now - 3600)[:-1]}-99:00"'
        ),
        "next-update-offset-plus-24": (nxt, f'"nextUpdate":"{s.iso(now + DAY)[:-1]}+24:00"'),
        "next-update-offset-minutes-60": (nxt, f'"nextUpdate":"{s.iso(now + DAY)[:-1]}+00:60"'),
        "next-update-offset-plus-23-59": (nxt, f'"nextUpdate":"{s.iso(now + DAY)[:-1]}+23:59"'),
        "next-update-offset-minus-23-59": (
            nxt, f'"nextUpdate":"{s.iso(now - 3600)[:-1]}-23:59"'
        ),
        "next-update-leap-second-before-now": (
            nxt, f'"nextUpdate":"{s.iso(now - 1)[:-3]}:60Z"'
        ),
        "next-update-fraction-and-lowercase": (
            nxt, f'"nextUpdate":"{s.iso(now)[:-1].replace("T", "t")}.999999999z"'
        ),
        "next-update-space-separator": (
            nxt, f'"nextUpdate":"{s.iso(now + DAY).replace("T", " ")}"'
        ),
        "next-update-february-29-2027": (nxt, '"nextUpdate":"2027-02-29T00:00:00Z"'),
        "next-update-hour-24": (nxt, f'"nextUpdate":"{s.iso(now + DAY)[:11]}24:00:00Z"'),
        "next-update-no-offset": (nxt, f'"nextUpdate":"{s.iso(now + DAY)[:-1]}"'),
        "issue-date-1969": (issue, '"issueDate":"1969-12-31T23:59:59Z"'),
        "issue-date-1970-minus-offset": (issue, '"issueDate":"1970-01-01T00:00:00+00:01"'),
        "issue-date-1970": (issue, '"issueDate":"1970-01-01T00:00:00Z"'),
        "issue-date-year-99": (issue, '"issueDate":"0099-06-01T00:00:00Z"'),
        "issue-date-year-0": (issue, '"issueDate":"0000-01-01T00:00:00Z"'),
    }
    for name, (old, new) in edits.items():
        assert old in tcb, name
        text = tcb.replace(old, new, 1)
        if name == "trailing-garbage":
            text = tcb + " x"
        add(f"tcb-info-{name}", signed("tcb_info", text))
    qe_edits = {
        "float-isvprodid": ('"isvprodid":1', '"isvprodid":1.0'),
        "float-isvsvn": ('"isvsvn":8', '"isvsvn":8.0'),
        "duplicate-isvprodid": ('"isvprodid":1', '"isvprodid":2,"isvprodid":1'),
        "duplicate-status": (
            '"tcbStatus":"UpToDate"', '"tcbStatus":"Revoked","tcbStatus":"UpToDate"'
        ),
        "issue-date-year-99": (issue, '"issueDate":"0099-06-01T00:00:00Z"'),
        "next-update-past-with-offset-minus-99": (
            nxt, f'"nextUpdate":"{s.iso(now - 3600)[:-1]}-99:00"'
        ),
        "level-sw-hardening-not-matched": (
            '"tcbStatus":"OutOfDate"', '"tcbStatus":"SWHardeningNeeded"'
        ),
    }
    for name, (old, new) in qe_edits.items():
        assert old in qe, name
        add(f"qe-identity-{name}", signed("qe_identity", qe.replace(old, new, 1)))


def verdict_for(case: dict, bases: dict, synth_root: bytes) -> dict:
    b = case["base"]
    if "vector" in b:
        quote = read_quote(b["vector"])
        collateral = json.loads((VECTORS / b["collateral"]).read_text())
        root = None
        now = b["verify_at"]
    else:
        sb = bases[b["synthetic"]]
        quote = bytes.fromhex(sb["quote"])
        collateral = sb["collateral"]
        root = bytes.fromhex(case.get("root_der") or sb["root_der"])
        now = sb["verify_at"]
    if "quote" in case:
        quote = bytes.fromhex(case["quote"])
    quote, collateral = apply(quote, collateral, case["mutations"])
    now = case.get("verify_at", now)
    if case.get("root") == "intel":
        root = None
    elif case.get("root") == "synthetic":
        root = synth_root
    if any(v is None for v in collateral.values()):
        return {"error": "collateral field is null"}
    return s.verdict(quote, collateral, root, now)


def main() -> None:
    pki = s.Pki(now=SYNTH_NOW)
    bases, synth_cases = synthetic(pki)
    cases = real_cases() + synth_cases
    for case in cases:
        case["expected"] = verdict_for(case, bases, pki.root_der)
    out = {
        "note": "Generated by tests/tools/make_tamper_vectors.py; "
        "expected = dcap-qvl 0.7.0's verdict. "
        "Mutation ops are documented there and in extensions/jupyterlab-ppml/test/mutate.ts.",
        "synthetic_root_der": pki.root_der.hex(),
        "synthetic_bases": bases,
        "cases": cases,
    }
    path = ROOT / "tests" / "data" / "tamper-vectors.json"
    # One case per line: compact, yet diffs stay readable.
    lines = ",\n".join(json.dumps(c, separators=(",", ":")) for c in cases)
    head = json.dumps({k: v for k, v in out.items() if k != "cases"}, separators=(",", ":"))[:-1]
    path.write_text(head + ',\n"cases":[\n' + lines + "\n]}\n")
    ok = sum(1 for c in cases if "status" in c["expected"])
    print(f"wrote {path}: {len(cases)} cases ({ok} verify, {len(cases) - ok} fail)")


if __name__ == "__main__":
    main()
