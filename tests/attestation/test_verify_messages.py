"""``ppml-kernel verify`` on unusable input and on expired collateral (issue 11 item 18,
issue 13): a truncated quote exits 2 as documented, and no failure shows a raw Rust debug
value such as ``CrlExpired { time: UnixTime(...) }``: the expired item is named with its
dates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import VECTORS

from ppml_kernel.attestation import Policy, Verifier
from ppml_kernel.attestation.qvl_errors import explain

SGX_QUOTE = VECTORS / "dcap-qvl/sgx_quote"
SGX_COLLATERAL = VECTORS / "dcap-qvl/sgx_quote_collateral.json"
RUST_DEBUG = ("{", "}", "UnixTime", "CrlExpired", "CertExpired", "CertNotValidYet", "Caused by")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ppml_kernel.cli", *args], capture_output=True,
                          text=True, env=os.environ.copy(), timeout=120)


@pytest.mark.parametrize("size", [0, 47, 300, 1000])
def test_a_truncated_quote_is_unusable_input_exit_2(tmp_path, size):
    quote = tmp_path / "short.quote"
    quote.write_bytes(SGX_QUOTE.read_bytes()[:size])
    out = cli("verify", str(quote), "--collateral", str(SGX_COLLATERAL), "--at", "1751624924")
    assert out.returncode == 2, out.stdout + out.stderr
    (line,) = out.stderr.splitlines()
    assert f"{quote} is not a usable quote ({size} bytes)" in line
    assert "Traceback" not in out.stderr
    as_json = cli("verify", str(quote), "--json")
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["stage"] == "parse"


def _no_debug_values(text: str) -> None:
    for token in RUST_DEBUG:
        assert token not in text, f"{token!r} in {text!r}"


def test_an_expired_crl_is_named_with_its_dates():
    out = cli("verify", str(SGX_QUOTE), "--collateral", str(SGX_COLLATERAL), "--at", "1877344000")
    assert out.returncode == 1
    _no_debug_values(out.stdout + out.stderr)
    failed = [line for line in out.stderr.splitlines() if line.startswith("FAILED:")]
    assert len(failed) == 1
    assert "the Root CA CRL" in failed[0] and "has expired" in failed[0]
    assert "2025-03-20 11:21:57 UTC to 2026-04-03 11:21:57 UTC" in failed[0]
    assert "verification time 2029-06-28 12:26:40 UTC" in failed[0]


def test_expired_tcb_info_is_named_with_its_dates():
    out = cli("verify", str(SGX_QUOTE), "--collateral", str(SGX_COLLATERAL), "--at", "1760000000")
    assert out.returncode == 1
    assert ("the TCB Info has expired (valid 2025-06-19 10:56:11 UTC to 2025-07-19 10:56:11 UTC)"
            in out.stderr)


@pytest.mark.parametrize(("years", "state"), [(11, "has expired"), (-30, "is not valid yet")])
def test_certificate_validity_errors_name_the_certificate(isolated_jupyter, tmp_path, years,
                                                         state):
    from ppml_kernel.tee.simulated import SimulatedAttester, build_collateral

    attester = SimulatedAttester(pki_dir=tmp_path / "pki")
    verifier = Verifier(Policy(allow_simulated=True), simulated_pki_dir=str(tmp_path / "pki"))
    at = int(time.time()) + years * 365 * 86400
    # The simulator's collateral for that moment (the verifier never makes collateral).
    result = verifier.verify(attester.quote(bytes(64)), build_collateral(attester.pki, at), at=at)
    assert not result.passed and result.stage == "signature"
    _no_debug_values(result.reason)
    assert "the certificate 'SIMULATED PCK" in result.reason and state in result.reason
    assert "in the quote's PCK chain (valid " in result.reason
    assert "\n" not in result.reason


def test_explain_rewrites_unknown_debug_values_and_leaves_plain_messages_alone():
    text = explain("Verification failed: SomethingNew { time: UnixTime(0), depth: 5 }")
    _no_debug_values(text)
    assert "something new" in text and "1970-01-01 00:00:00 UTC" in text and "depth 5" in text
    assert explain("Verification failed: UnknownIssuer").startswith("Verification failed: a ")
    plain = "Verification failed: No matching TCB level found"
    assert explain(plain, at=0) == plain
