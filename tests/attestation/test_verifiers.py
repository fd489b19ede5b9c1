"""The per-kind verifiers (attestation/verifiers/) and the rule that a verifier holds no key.

The verifying side must never hold a producer's keys: a verifier that can sign collateral
can make any simulated quote pass. So no module under ppml_kernel/attestation/ may import
the simulated PKI's signing code, and verifying never opens a private key file; a
simulated quote verifies only with the collateral its attester produced and sent.
"""

from __future__ import annotations

import ast
import builtins
import io
import os
from pathlib import Path

import pytest
from conftest import load_vectors

from ppml_kernel.attestation import Collateral, Policy, Verifier, parse_quote
from ppml_kernel.attestation.anchors import intel_root
from ppml_kernel.attestation.policy import KNOWN_TCB_STATUSES
from ppml_kernel.attestation.selfcheck import simulated_anchor_of
from ppml_kernel.attestation.verifiers import (
    KINDS,
    Evidence,
    SgxDcapVerifier,
    SimulatedVerifier,
    TdxDcapVerifier,
)
from ppml_kernel.attestation.verifiers.simulated import NO_COLLATERAL
from ppml_kernel.tee.simulated import SimulatedAttester

ATTESTATION = Path(__file__).resolve().parents[2] / "ppml_kernel" / "attestation"
ALLOW_SIM = Policy(allow_simulated=True)
ALL_STATUSES = Policy(allowed_tcb_statuses=tuple(s for s in KNOWN_TCB_STATUSES if s != "Revoked"))
# What may never appear in the verifying layer: the producer's signing code and key loading.
FORBIDDEN_MODULES = (
    "ppml_kernel.tee.simulated.pki",
    "ppml_kernel.tee.simulated.collateral",
    "ppml_kernel.tee.simulated.quote",
)
FORBIDDEN_NAMES = {
    "SimulatedPKI", "build_collateral", "collateral_json", "build_quote", "raw_ecdsa_sign",
    "sign_collateral", "sign_report", "load_pem_private_key", "load_der_private_key",
}


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every import in ``path`` (name "" for ``import module``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, alias.name) for alias in node.names]
    return found


def test_no_attestation_module_imports_signing_code_or_loads_keys() -> None:
    modules = sorted(ATTESTATION.rglob("*.py"))
    assert len(modules) >= 12  # the scan sees the verifiers package too
    offences = []
    for path in modules:
        for module, name in _imports(path):
            full = f"{module}.{name}" if name else module
            if any(full == m or full.startswith(m + ".") for m in FORBIDDEN_MODULES):
                offences.append(f"{path.name}: imports {full}")
            if name in FORBIDDEN_NAMES:
                offences.append(f"{path.name}: imports {name}")
        text = path.read_text()
        offences += [f"{path.name}: uses {n}" for n in FORBIDDEN_NAMES if f"{n}(" in text]
    assert offences == []


def test_verifying_loads_no_signing_module_even_indirectly(tmp_path: Path) -> None:
    """Transitively too: verifying a simulated quote never imports the PKI or its signers."""
    import subprocess
    import sys

    code = f"""
import sys
from ppml_kernel.tee.simulated import SimulatedAttester
a = SimulatedAttester({str(tmp_path / "pki")!r})
quote, collateral = a.quote(bytes(64)), a.collateral()
for name in [m for m in sys.modules if m.startswith("ppml_kernel.tee.simulated.")]:
    if not name.endswith((".paths", ".tcb")):
        del sys.modules[name]  # forget the producer's modules, then verify
from ppml_kernel.attestation import Policy, Verifier
r = Verifier(Policy(allow_simulated=True), simulated_pki_dir={str(tmp_path / "pki")!r}).verify(
    quote, collateral)
assert r.passed, r.reason
print(sorted(m for m in sys.modules if m.startswith("ppml_kernel.tee.simulated.")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    loaded = out.stdout.strip()
    assert loaded == "['ppml_kernel.tee.simulated.paths', 'ppml_kernel.tee.simulated.tcb']"


def test_the_scan_catches_the_old_on_demand_signing(tmp_path: Path) -> None:
    """The scan above is able to fail: the removed code would be caught."""
    old = tmp_path / "verifier.py"
    old.write_text("from ppml_kernel.tee.simulated import SimulatedPKI, build_collateral\n")
    assert {n for _, n in _imports(old)} & FORBIDDEN_NAMES == {"SimulatedPKI", "build_collateral"}


@pytest.fixture
def attester(tmp_path: Path) -> SimulatedAttester:
    return SimulatedAttester(tmp_path / "pki-a")


@pytest.fixture
def sent(attester: SimulatedAttester) -> tuple[bytes, str]:
    """What the simulated attester produces and sends: a quote and its collateral."""
    return attester.quote(bytes(64)), attester.collateral()


@pytest.fixture
def no_key_files(attester, sent, monkeypatch: pytest.MonkeyPatch):
    """From here on, opening any private key of the PKI raises (and is recorded)."""
    pki_dir = attester.pki.directory
    touched: list[str] = []

    def is_key(target: object) -> bool:
        try:
            path = Path(os.fsdecode(target)).resolve()  # type: ignore[arg-type]
        except TypeError:
            return False
        inside = path.is_relative_to(pki_dir.resolve())
        return inside and (path.suffix == ".key" or path.parent.name == "pck")

    def guard(real):
        def opener(file, *args, **kwargs):
            if is_key(file):
                touched.append(str(file))
                raise PermissionError(f"the verifier opened a private key file: {file}")
            return real(file, *args, **kwargs)

        return opener

    monkeypatch.setattr(builtins, "open", guard(builtins.open))
    monkeypatch.setattr(io, "open", guard(io.open))
    monkeypatch.setattr(os, "open", guard(os.open))
    import ppml_kernel.tee.simulated.pki as pki_module

    def refuse(*args, **kwargs):
        touched.append("SimulatedPKI.load")
        raise AssertionError("the verifier loaded the simulated PKI")

    monkeypatch.setattr(pki_module.SimulatedPKI, "load", classmethod(refuse))
    monkeypatch.setattr(pki_module.SimulatedPKI, "load_or_create", classmethod(refuse))
    return touched


def test_verifying_a_simulated_quote_opens_no_private_key(attester, sent, no_key_files):
    quote, collateral = sent  # made by the attester (which holds the keys) before the guard
    verifier = Verifier(ALLOW_SIM, simulated_pki_dir=str(attester.pki_dir))
    ok = verifier.verify(quote, collateral)
    assert ok.passed and ok.simulated, ok.reason
    missing = verifier.verify(quote)  # the old code signed collateral here, from the keys
    assert not missing.passed and missing.stage == "collateral"
    assert missing.error == NO_COLLATERAL and missing.simulated
    assert no_key_files == []


def test_the_key_guard_is_able_to_fail(attester, no_key_files) -> None:
    from ppml_kernel.tee.simulated.pki import SimulatedPKI

    with pytest.raises(PermissionError):
        (attester.pki.directory / "root-ca.key").read_bytes()
    with pytest.raises(AssertionError):
        SimulatedPKI.load(attester.pki.directory)
    assert len(no_key_files) == 2


def test_collateral_signed_by_another_simulated_pki_is_refused(tmp_path, attester):
    other = SimulatedAttester(tmp_path / "pki-b")
    quote = attester.quote(bytes(64))
    trusted = Verifier(ALLOW_SIM, simulated_anchor=simulated_anchor_of(attester))
    assert trusted.verify(quote, attester.collateral()).passed
    result = trusted.verify(quote, other.collateral())
    assert not result.passed and result.stage == "signature"
    assert result.simulated and result.anchor_fingerprint == attester.pki.root_fingerprint


def test_simulated_kind_refuses_missing_or_broken_collateral(attester):
    anchor = simulated_anchor_of(attester)
    assert anchor is not None
    quote = attester.quote(bytes(64))
    kind = SimulatedVerifier(ALLOW_SIM, anchor)
    info = parse_quote(quote)
    none = kind.verify(Evidence(quote, info), None, 1_800_000_000)
    assert (none.passed, none.stage, none.error) == (False, "collateral", NO_COLLATERAL)
    broken = kind.verify(Evidence(quote, info, "{"), None, 1_800_000_000)
    assert not broken.passed and broken.stage == "collateral"
    with pytest.raises(ValueError, match="simulated root"):
        SimulatedVerifier(ALLOW_SIM, intel_root())


def test_verifier_dispatches_each_quote_to_its_kind(attester):
    vectors = {v.entry["tee"]: v for v in load_vectors() if v.collateral_path}
    verifier = Verifier(ALLOW_SIM, simulated_anchor=simulated_anchor_of(attester))
    sgx, tdx = (parse_quote(vectors[t].quote) for t in ("SGX", "TDX"))
    assert isinstance(verifier.kind_for(sgx, intel_root()), SgxDcapVerifier)
    assert isinstance(verifier.kind_for(tdx, intel_root()), TdxDcapVerifier)
    anchor = simulated_anchor_of(attester)
    assert anchor is not None
    sim = parse_quote(attester.quote(bytes(64)))
    assert isinstance(verifier.kind_for(sim, anchor), SimulatedVerifier)
    assert set(KINDS) == {"sgx-dcap", "tdx-dcap", "simulated"}


def test_a_kind_refuses_another_tees_quote():
    vectors = {v.entry["tee"]: v for v in load_vectors() if v.collateral_path}
    for tee, kind in (("TDX", SgxDcapVerifier), ("SGX", TdxDcapVerifier)):
        v = vectors[tee]
        evidence = Evidence(v.quote, parse_quote(v.quote), Collateral.load(v.collateral_path))
        result = kind(ALL_STATUSES, intel_root(), None).verify(evidence, None, v.verify_at)
        assert not result.passed and result.stage == "anchor" and tee in (result.error or "")
    # and each accepts its own at the vector's time
    for tee, kind in (("SGX", SgxDcapVerifier), ("TDX", TdxDcapVerifier)):
        v = next(x for x in load_vectors() if x.entry["tee"] == tee and x.collateral_path
                 and not x.expected.startswith("ERROR"))
        evidence = Evidence(v.quote, parse_quote(v.quote), Collateral.load(v.collateral_path))
        result = kind(ALL_STATUSES, intel_root(), None).verify(evidence, None, v.verify_at)
        assert result.passed and result.tcb_status == v.expected, result.reason


def test_policy_sections_per_tee_kind():
    policy = Policy.from_dict({"mrtd": "ab" * 48, "rtmr3": ["cd" * 48]})
    assert policy.tee == "tdx" and policy.tdx.pinned() == ["mrtd", "rtmr3"]
    assert policy.sgx.pinned() == []
    sgx = Policy(mrenclave=("00" * 32,), isv_prod_id=1, min_isv_svn=2)
    assert sgx.tee == "sgx" and sgx.sgx.pinned() == ["mrenclave", "isv_prod_id", "min_isv_svn"]
