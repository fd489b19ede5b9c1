"""The verifier and the simulated enclave together: simulation is refused unless allowed,
and a simulated quote is judged by which root verified it."""

from __future__ import annotations

import os

import pytest

from ppml_kernel.attestation import Policy, Verifier
from ppml_kernel.attestation.selfcheck import self_check, simulated_anchor_of
from ppml_kernel.tee import AttesterError, detect_kind, get_attester
from ppml_kernel.tee.simulated import SimulatedAttester

ALLOW_SIM = Policy(allow_simulated=True)


@pytest.fixture
def attester(tmp_path):
    return SimulatedAttester(tmp_path / "pki-a")


def verify(attester, policy, quote=None, anchor_of=None, **kw):
    quote = quote if quote is not None else attester.quote(os.urandom(64))
    anchor = simulated_anchor_of(anchor_of or attester)
    return Verifier(policy, simulated_anchor=anchor).verify(quote, attester.collateral(), **kw)


def test_default_policy_refuses_simulation(attester):
    result = verify(attester, Policy())
    assert not result.passed and result.stage == "anchor"
    assert result.simulated and "SIMULATED" in result.reason
    assert "SIMULATED ENCLAVE" in str(result) and "ppml-simulated" in result._repr_html_()


def test_allowed_simulation_passes_amber_with_banner(attester):
    result = verify(attester, ALLOW_SIM)
    assert result.passed and result.tcb_status == "UpToDate"
    assert result.simulated and result.colour == "amber"
    assert result.anchor.startswith("SIMULATED root")
    assert "SIMULATED ENCLAVE - NOT CONFIDENTIAL" in str(result)
    assert "SIMULATED ENCLAVE - NOT CONFIDENTIAL" in result._repr_html_()


def test_intel_only_verifier_rejects_simulated_quote(attester):
    quote = attester.quote(bytes(64))
    result = Verifier(ALLOW_SIM, simulated_anchor=None).verify(quote, attester.collateral())
    result_no_local = Verifier(ALLOW_SIM, simulated_pki_dir="/nonexistent").verify(
        quote, attester.collateral()
    )
    for r in (result, result_no_local):
        assert not r.passed and r.stage == "anchor" and "not trusted" in r.reason


def test_second_independent_pki_rejected_by_first(tmp_path, attester):
    rogue = SimulatedAttester(tmp_path / "pki-b")
    quote = rogue.quote(bytes(64))
    result = Verifier(ALLOW_SIM, simulated_anchor=simulated_anchor_of(attester)).verify(
        quote, rogue.collateral()
    )
    assert not result.passed and result.stage == "anchor"
    # and with the first PKI's collateral it fails too
    result = Verifier(ALLOW_SIM, simulated_anchor=simulated_anchor_of(attester)).verify(
        quote, attester.collateral()
    )
    assert not result.passed
    assert rogue.pki.root_fingerprint != attester.pki.root_fingerprint


@pytest.mark.parametrize("offset", [0, 4, 8, 12, 28, 48, 64, 112, 176, 304, 306, 368, 431])
def test_tampered_simulated_quote_fails(attester, offset):
    quote = bytearray(attester.quote(os.urandom(64)))
    quote[offset] ^= 0x04
    assert not verify(attester, ALLOW_SIM, quote=bytes(quote)).passed


def test_debug_and_out_of_date_simulated_enclaves(tmp_path, attester):
    debug = SimulatedAttester(attester.pki.directory, debug=True)
    result = verify(debug, ALLOW_SIM, anchor_of=attester)
    assert not result.passed and "Debug" in result.reason
    old = SimulatedAttester(attester.pki.directory, tcb_status="OutOfDate")
    result = verify(old, ALLOW_SIM, anchor_of=attester)
    assert not result.passed and result.stage == "policy" and result.tcb_status == "OutOfDate"
    assert result.advisory_ids


def test_simulated_collateral_outside_window(attester):
    quote = attester.quote(bytes(64))
    import time

    later = int(time.time()) + 40 * 86400
    result = verify(attester, ALLOW_SIM, quote=quote, at=later)
    assert not result.passed and result.stage == "signature"


def test_self_check_binds_fresh_nonce(attester):
    check = self_check(attester, policy=ALLOW_SIM)
    assert check.result.passed
    assert any(c.name == "report_data" and c.ok for c in check.result.checks)
    again = self_check(attester, policy=ALLOW_SIM)
    assert again.nonce != check.nonce and again.quote != check.quote


def test_factory_env_override_and_errors(monkeypatch):
    monkeypatch.setenv("PPML_TEE", "simulated")
    assert get_attester().kind == "simulated"
    monkeypatch.setenv("PPML_TEE", "sev-snp")
    with pytest.raises(AttesterError, match="unknown TEE kind 'sev-snp'"):
        get_attester()
    monkeypatch.setenv("PPML_TEE", "auto")
    assert get_attester().kind == detect_kind() == "simulated"
