"""The project's verifier gives dcap-qvl's verdict on every real vector at verify_at."""

from __future__ import annotations

import pytest
from conftest import load_vectors

from ppml_kernel.attestation import Collateral, Policy, Verifier, parse_quote
from ppml_kernel.attestation.policy import KNOWN_TCB_STATUSES

# Every status but Revoked: the verdict, not the policy, is under test here.
ALL_STATUSES = Policy(
    allowed_tcb_statuses=tuple(st for st in KNOWN_TCB_STATUSES if st != "Revoked")
)
VECTORS = load_vectors()
VERIFIABLE = [v for v in VECTORS if v.collateral_path]
PARSE_ONLY = [v for v in VECTORS if not v.collateral_path]


def test_manifest_has_both_kinds():
    assert len(VERIFIABLE) >= 9 and len(PARSE_ONLY) >= 4


@pytest.mark.parametrize("vector", VERIFIABLE, ids=lambda v: v.name)
def test_verdict_matches_dcap_qvl(vector):
    result = Verifier(ALL_STATUSES).verify(
        vector.quote, Collateral.load(vector.collateral_path), at=vector.verify_at
    )
    if vector.expected.startswith("ERROR: "):
        assert not result.passed
        assert result.stage == "signature"
        assert result.error == vector.expected.removeprefix("ERROR: ")
    else:
        assert result.passed, result.reason
        assert result.tcb_status == vector.expected
        assert result.anchor == "Intel SGX Root CA"
        assert not result.simulated


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_parses_with_manifest_measurements(vector):
    info = parse_quote(vector.quote)
    e = vector.entry
    assert info.version == e["quote_version"]
    assert info.tee == e["tee"]
    assert info.fmspc == e["fmspc"]
    assert info.pck_ca == e["pck_ca"]
    if info.tee == "SGX":
        assert info.mrenclave == e["mrenclave"]
        assert info.mrsigner == e["mrsigner"]
        assert info.attributes == e["attributes"]
        assert (info.isv_prod_id, info.isv_svn) == (e["isv_prod_id"], e["isv_svn"])
    else:
        assert info.mr_td == e["mrtd"]
        assert info.td_attributes == e["td_attributes"]
        assert info.body == e["body"].removeprefix("Py")


def test_default_policy_rejects_configuration_needed_platform():
    vector = next(v for v in VERIFIABLE if v.expected == "ConfigurationAndSWHardeningNeeded")
    result = Verifier().verify(
        vector.quote, Collateral.load(vector.collateral_path), at=vector.verify_at
    )
    assert not result.passed and result.stage == "policy"
    assert result.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert "tcb_status" in result.reason


def test_debug_quote_rejected_and_flagged():
    vector = next(v for v in VERIFIABLE if "debug" in v.name)
    assert parse_quote(vector.quote).debug
    result = Verifier(ALL_STATUSES).verify(
        vector.quote, Collateral.load(vector.collateral_path), at=vector.verify_at
    )
    assert not result.passed and "Debug" in result.reason


def _sgx_vector():
    return next(v for v in VERIFIABLE if v.name == "dcap-qvl/sgx_quote")


@pytest.mark.parametrize("offset", range(0, 432, 7))
def test_tampering_signed_region_of_real_quote_fails(offset):
    vector = _sgx_vector()
    raw = bytearray(vector.quote)
    raw[offset] ^= 0x01
    result = Verifier(ALL_STATUSES).verify(
        bytes(raw), Collateral.load(vector.collateral_path), at=vector.verify_at
    )
    assert not result.passed


def test_every_byte_of_signed_region_of_real_quote_is_covered():
    """Exhaustive: all 432 single-byte flips of the signed region fail."""
    vector = _sgx_vector()
    verifier = Verifier(ALL_STATUSES)
    collateral = Collateral.load(vector.collateral_path)
    accepted = []
    for offset in range(432):
        raw = bytearray(vector.quote)
        raw[offset] ^= 0x80
        if verifier.verify(bytes(raw), collateral, at=vector.verify_at).passed:
            accepted.append(offset)
    assert accepted == []


@pytest.mark.parametrize("delta", [-86400 * 60, 86400 * 60])
def test_collateral_outside_validity_window_rejected(delta):
    vector = _sgx_vector()
    result = Verifier(ALL_STATUSES).verify(
        vector.quote, Collateral.load(vector.collateral_path), at=vector.verify_at + delta
    )
    assert not result.passed and result.stage == "signature"
    at = vector.verify_at + delta
    assert any(not w.contains(at) for w in result.windows)
    assert any(word in result.error for word in ("expired", "future", "not valid", "Expired"))


def test_report_data_binding_checked():
    vector = _sgx_vector()
    collateral = Collateral.load(vector.collateral_path)
    good = bytes.fromhex(parse_quote(vector.quote).report_data)
    ok = Verifier(ALL_STATUSES).verify(
        vector.quote, collateral, at=vector.verify_at, expected_report_data=good
    )
    bad = Verifier(ALL_STATUSES).verify(
        vector.quote, collateral, at=vector.verify_at, expected_report_data=b"\x00" * 64
    )
    assert ok.passed
    assert not bad.passed and "report_data" in bad.reason


def test_truncated_and_garbage_quotes_give_clear_errors():
    vector = _sgx_vector()
    v = Verifier(ALL_STATUSES)
    r = v.verify(vector.quote[:20], at=vector.verify_at)
    assert r.stage == "parse" and "48" in r.error
    r = v.verify(b"\x07\x00" + vector.quote[2:], at=vector.verify_at)
    assert r.stage == "parse" and "version 7" in r.error
    r = v.verify(vector.quote[:600], at=vector.verify_at)
    assert not r.passed and r.stage in ("parse", "anchor")


def test_result_renders_every_field():
    vector = _sgx_vector()
    result = Verifier(ALL_STATUSES).verify(
        vector.quote, Collateral.load(vector.collateral_path), at=vector.verify_at
    )
    text, html = str(result), result._repr_html_()
    info = parse_quote(vector.quote)
    for needle in (
        info.mrenclave,
        info.mrsigner,
        "ConfigurationAndSWHardeningNeeded",
        "INTEL-SA-00615",
        "TCB Info",
        "PCK CRL",
    ):
        assert needle in text and needle in html
    assert result.colour == "amber" and "SIMULATED" not in text
