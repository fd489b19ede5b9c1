"""The simulated enclave against the real verifier (dcap-qvl), never a mock.

Every PKI here lives under pytest's tmp_path; an autouse fixture also points
$PPML_SIM_PKI_DIR and $JUPYTER_DATA_DIR at tmp dirs, so the user's real Jupyter
data directory is never touched.
"""

from __future__ import annotations

import json
import stat
import statistics
import struct
import time
from pathlib import Path

import dcap_qvl
import pytest

from ppml_kernel.tee import AttesterError, get_attester
from ppml_kernel.tee.simulated import (
    TCB_STATUSES,
    SimulatedAttester,
    SimulatedPKI,
    SimulatedPKIError,
    build_collateral,
    build_quote,
    collateral_json,
    default_pki_dir,
    package_measurement,
)
from ppml_kernel.tee.simulated import tcb as sim_tcb

DAY = 86400
REPORT_DATA = bytes(range(64))
MRENCLAVE = bytes.fromhex("11" * 32)

# Offsets of a v3 quote (see BRIEF section 3).
SIGNED_END = 432
ISV_SIG = slice(436, 500)
ATTESTATION_KEY = slice(500, 564)
QE_REPORT = slice(564, 948)
QE_REPORT_SIG = slice(948, 1012)
QE_AUTH_DATA = slice(1014, 1046)
CERT_DATA_HEADER = 1046  # type u16, size u32, then the PEM chain


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    base = tmp_path_factory.mktemp("isolated")
    monkeypatch.setenv("PPML_SIM_PKI_DIR", str(base / "env-pki"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(base / "jupyter-data"))
    for name in (
        "PPML_SIM_MRENCLAVE",
        "PPML_SIM_MRSIGNER",
        "PPML_SIM_ISVPRODID",
        "PPML_SIM_ISVSVN",
        "PPML_SIM_TCB_STATUS",
        "PPML_SIM_DEBUG",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPKI:
    return SimulatedPKI.create(tmp_path_factory.mktemp("sim") / "pki")


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPKI:
    return SimulatedPKI.create(tmp_path_factory.mktemp("sim-other") / "pki")


@pytest.fixture(scope="module")
def collateral(pki: SimulatedPKI) -> dcap_qvl.QuoteCollateralV3:
    return dcap_qvl.QuoteCollateralV3.from_json(collateral_json(pki))


def _quote(pki: SimulatedPKI, **kwargs) -> bytes:
    kwargs.setdefault("mrenclave", MRENCLAVE)
    kwargs.setdefault("mrsigner", pki.default_mrsigner)
    return build_quote(pki, REPORT_DATA, **kwargs)


def _verify(raw: bytes, collateral, pki: SimulatedPKI, now: int | None = None):
    when = int(time.time()) if now is None else now
    return dcap_qvl.verify_with_root_ca(raw, collateral, pki.root_der, when)


def _rejected(raw: bytes, collateral, pki: SimulatedPKI) -> bool:
    try:
        _verify(raw, collateral, pki)
    except ValueError:
        return True
    return False


# ---- verification ------------------------------------------------------------------------


def test_attester_quote_verifies_with_simulated_root(tmp_path: Path) -> None:
    attester = SimulatedAttester(tmp_path / "pki")
    raw = attester.quote(REPORT_DATA)
    collateral = dcap_qvl.QuoteCollateralV3.from_json(attester.collateral())
    report = dcap_qvl.verify_with_root_ca(raw, collateral, attester.pki.root_der, int(time.time()))
    assert report.status == "UpToDate"
    assert report.advisory_ids == []


@pytest.mark.parametrize("status", [s for s in TCB_STATUSES if s != "Revoked"])
def test_each_emulated_tcb_level_gives_its_status_and_advisories(
    pki: SimulatedPKI, collateral, status: str
) -> None:
    report = _verify(_quote(pki, tcb_status=status), collateral, pki)
    assert report.status == status
    assert report.advisory_ids == list(sim_tcb.tcb_level(status).advisory_ids)


def test_revoked_platform_is_rejected(pki: SimulatedPKI, collateral) -> None:
    with pytest.raises(ValueError, match="TCB status is invalid: Revoked"):
        _verify(_quote(pki, tcb_status="Revoked"), collateral, pki)


def test_unknown_tcb_status_is_refused(pki: SimulatedPKI) -> None:
    with pytest.raises(ValueError, match="unknown TCB status"):
        _quote(pki, tcb_status="Great")


def test_intel_root_rejects_simulated_quote(pki: SimulatedPKI, collateral) -> None:
    raw = _quote(pki)
    _verify(raw, collateral, pki)  # control: fine with the simulated root
    with pytest.raises(ValueError):
        dcap_qvl.verify(raw, collateral, int(time.time()))


def test_policy_api_accepts_simulated_quote_with_its_root(pki: SimulatedPKI, collateral) -> None:
    now = int(time.time())
    claims = dcap_qvl.QuoteVerifier(pki.root_der).verify_with_policy(
        _quote(pki), collateral, now, dcap_qvl.QuotePolicy.strict(now)
    )
    assert json.loads(claims.to_json())["tcb"]["status"] == "UpToDate"


# ---- tampering ---------------------------------------------------------------------------


def test_every_byte_of_signed_region_is_protected(pki: SimulatedPKI, collateral) -> None:
    raw = _quote(pki)
    _verify(raw, collateral, pki)
    accepted = []
    for position in range(SIGNED_END):
        for mask in (0x01, 0xFF):
            tampered = bytearray(raw)
            tampered[position] ^= mask
            if not _rejected(bytes(tampered), collateral, pki):
                accepted.append((position, mask))
    assert accepted == []


@pytest.mark.parametrize(
    "region",
    [ISV_SIG, ATTESTATION_KEY, QE_REPORT, QE_REPORT_SIG, QE_AUTH_DATA],
    ids=["isv-signature", "attestation-key", "qe-report", "qe-report-signature", "qe-auth-data"],
)
def test_tampered_signature_data_is_rejected(pki: SimulatedPKI, collateral, region: slice) -> None:
    raw = _quote(pki)
    accepted = []
    for position in range(region.start, region.stop):
        tampered = bytearray(raw)
        tampered[position] ^= 0x01
        if not _rejected(bytes(tampered), collateral, pki):
            accepted.append(position)
    assert accepted == []


def _with_chain(raw: bytes, chain: bytes) -> bytes:
    """Replace the certification data (type 5 PEM chain), fixing every length field."""
    head = raw[:CERT_DATA_HEADER] + struct.pack("<HI", 5, len(chain)) + chain
    return head[:432] + struct.pack("<I", len(head) - 436) + head[436:]


def _chain(raw: bytes) -> bytes:
    size = struct.unpack_from("<I", raw, CERT_DATA_HEADER + 2)[0]
    return raw[CERT_DATA_HEADER + 6 : CERT_DATA_HEADER + 6 + size]


def test_tampered_cert_chain_is_rejected(pki: SimulatedPKI, other_pki, collateral) -> None:
    raw = _quote(pki)
    chain = _chain(raw)
    assert _with_chain(raw, chain) == raw  # the helper itself is faithful
    # A genuine leaf of the same PKI, but for another platform: QE report signature fails.
    other_leaf = pki.pck_leaf("OutOfDate").pem
    swapped = chain.replace(pki.pck_leaf("UpToDate").pem, other_leaf)
    assert swapped != chain
    with pytest.raises(ValueError, match="qe_report"):
        _verify(_with_chain(raw, swapped), collateral, pki)
    # Another installation's whole chain: does not chain to this root.
    foreign = other_pki.pck_leaf().pem + other_pki.platform_ca_pem + other_pki.root_pem
    assert _rejected(_with_chain(raw, foreign), collateral, pki)
    # One flipped base64 character inside the leaf certificate.
    position = chain.index(b"\n", 40) + 200
    flipped = bytearray(chain)
    flipped[position] = ord("A") if flipped[position] != ord("A") else ord("B")
    assert _rejected(_with_chain(raw, bytes(flipped)), collateral, pki)
    # No chain at all.
    assert _rejected(_with_chain(raw, b""), collateral, pki)


def test_quote_from_another_pki_fails_with_first_root(
    pki: SimulatedPKI, other_pki: SimulatedPKI, collateral
) -> None:
    foreign = _quote(other_pki)
    foreign_collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json(other_pki))
    _verify(foreign, foreign_collateral, other_pki)  # control: fine with its own root
    assert _rejected(foreign, collateral, pki)
    assert _rejected(foreign, foreign_collateral, pki)
    assert pki.default_mrsigner != other_pki.default_mrsigner


def test_debug_quote_is_rejected(pki: SimulatedPKI, collateral) -> None:
    with pytest.raises(ValueError, match="Debug mode is enabled"):
        _verify(_quote(pki, debug=True), collateral, pki)


# ---- collateral freshness -----------------------------------------------------------------


def test_collateral_is_rejected_after_next_update_and_before_issue(
    pki: SimulatedPKI,
) -> None:
    now = int(time.time())
    collateral = dcap_qvl.QuoteCollateralV3.from_json(build_collateral(pki, now))
    raw = _quote(pki)
    _verify(raw, collateral, pki, now + 29 * DAY)
    with pytest.raises(ValueError, match=r"(?i)expired"):
        _verify(raw, collateral, pki, now + 31 * DAY)
    with pytest.raises(ValueError, match="issue date is in the future"):
        _verify(raw, collateral, pki, now - 2 * 3600)


def test_collateral_window_and_signed_formats(pki: SimulatedPKI) -> None:
    now = int(time.time())
    data = json.loads(build_collateral(pki, now))
    tcb_info = json.loads(data["tcb_info"])
    qe_identity = json.loads(data["qe_identity"])
    assert (tcb_info["id"], tcb_info["version"]) == ("SGX", 3)
    assert (qe_identity["id"], qe_identity["version"]) == ("QE", 2)
    assert [level["tcbStatus"] for level in tcb_info["tcbLevels"]] == list(TCB_STATUSES)
    issue = time.mktime(time.strptime(tcb_info["issueDate"], "%Y-%m-%dT%H:%M:%SZ"))
    next_update = time.mktime(time.strptime(tcb_info["nextUpdate"], "%Y-%m-%dT%H:%M:%SZ"))
    assert next_update - issue == 30 * DAY + 3600
    assert len(bytes.fromhex(data["tcb_info_signature"])) == 64
    assert "SIMULATED TCB Signing" in _subjects(data["tcb_info_issuer_chain"])


def _subjects(pem_chain: str) -> str:
    from cryptography import x509

    certs = x509.load_pem_x509_certificates(pem_chain.encode())
    return " | ".join(cert.subject.rfc4514_string() for cert in certs)


def test_collateral_cache_reuses_then_refreshes_near_expiry(pki: SimulatedPKI) -> None:
    now = int(time.time())
    first = collateral_json(pki, now)
    assert collateral_json(pki, now + 10 * DAY) is first
    refreshed = collateral_json(pki, now + 29 * DAY + 3600)  # within a day of nextUpdate
    assert refreshed != first
    late = now + 45 * DAY
    _verify(
        _quote(pki), dcap_qvl.QuoteCollateralV3.from_json(collateral_json(pki, late)), pki, late
    )


# ---- what the quote says --------------------------------------------------------------------


def test_parsed_quote_shows_the_requested_identity(pki: SimulatedPKI, collateral) -> None:
    mrsigner = bytes.fromhex("22" * 32)
    raw = _quote(pki, mrsigner=mrsigner, isv_prod_id=7, isv_svn=513)
    quote = dcap_qvl.parse_quote(raw)
    assert quote.quote_type() == "SGX"
    assert quote.header.version == 3
    assert quote.header.user_data.rstrip(b"\0") == b"SIMULATED"
    assert quote.report.mr_enclave == MRENCLAVE
    assert quote.report.mr_signer == mrsigner
    assert quote.report.report_data == REPORT_DATA
    assert quote.report.attributes[0] & 0x02 == 0  # not debug
    assert quote.report.attributes[0] & 0x04  # MODE64BIT
    assert quote.report.cpu_svn == sim_tcb.tcb_level("UpToDate").cpu_svn
    assert quote.ca() == "platform"
    assert quote.fmspc() == pki.fmspc.hex().upper()
    body = json.loads(_verify(raw, collateral, pki).to_json())["report"]["SgxEnclave"]
    assert (body["isv_prod_id"], body["isv_svn"]) == (7, 513)


def test_bad_build_arguments_are_refused(pki: SimulatedPKI) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        build_quote(pki, b"short", mrenclave=MRENCLAVE, mrsigner=MRENCLAVE)
    with pytest.raises(ValueError, match="mrenclave"):
        build_quote(pki, REPORT_DATA, mrenclave=b"x", mrsigner=MRENCLAVE)
    with pytest.raises(ValueError, match="isv_svn"):
        build_quote(pki, REPORT_DATA, mrenclave=MRENCLAVE, mrsigner=MRENCLAVE, isv_svn=70000)


# ---- the PKI on disk --------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_files_are_private_and_directory_is_0700(tmp_path: Path) -> None:
    pki = SimulatedPKI.create(tmp_path / "pki")
    pki.pck_leaf("UpToDate")
    assert _mode(pki.directory) == 0o700
    assert _mode(pki.directory / "pck") == 0o700
    key_files = [Path(p) for p in pki.describe()["private_key_files"]]
    assert len(key_files) == 5  # root, platform CA, TCB signer, attestation key, one leaf
    for path in key_files:
        assert _mode(path) == 0o600, path
        assert b"PRIVATE KEY" in path.read_bytes()
    assert "PRIVATE KEY" not in json.dumps(pki.describe())


def test_load_gives_same_root_and_reset_gives_new_one(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    created = SimulatedPKI.load_or_create(directory)
    loaded = SimulatedPKI.load(directory)
    assert loaded.root_der == created.root_der
    assert SimulatedPKI.load_or_create(directory).root_fingerprint == created.root_fingerprint
    with pytest.raises(FileExistsError):
        SimulatedPKI.create(directory)
    reset = SimulatedPKI.reset(directory)
    assert reset.root_fingerprint != created.root_fingerprint
    assert SimulatedPKI.load(directory).root_fingerprint == reset.root_fingerprint
    assert not created.is_current() and reset.is_current()


def test_describe_lists_facts(pki: SimulatedPKI) -> None:
    facts = pki.describe()
    assert facts["simulated"] is True
    assert facts["root_fingerprint"] == pki.root_fingerprint
    assert "ppml-kernel SIMULATED SGX Root CA" in facts["root"]["subject"]
    assert "SIMULATED PCK Platform CA" in facts["pck_platform_ca"]["subject"]
    assert "SIMULATED TCB Signing" in facts["tcb_signing"]["subject"]
    assert pki.root_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert pki.created_at.tzinfo is not None


def test_load_refuses_missing_or_unsafe_pki(tmp_path: Path) -> None:
    with pytest.raises(SimulatedPKIError, match="no simulated PKI"):
        SimulatedPKI.load(tmp_path / "absent")
    pki = SimulatedPKI.create(tmp_path / "pki")
    (pki.directory / "root-ca.key").chmod(0o644)
    with pytest.raises(SimulatedPKIError, match="accessible by other users"):
        SimulatedPKI.load(pki.directory)
    (pki.directory / "root-ca.key").chmod(0o600)
    (pki.directory / "tcb-signing.key").unlink()
    with pytest.raises(SimulatedPKIError, match=r"tcb-signing\.key is missing"):
        SimulatedPKI.load(pki.directory)


def test_damaged_pck_leaf_is_reissued(tmp_path: Path) -> None:
    pki = SimulatedPKI.create(tmp_path / "pki")
    path = pki.directory / "pck" / "UpToDate.pem"
    pki.pck_leaf("UpToDate")
    path.write_bytes(b"garbage")
    fresh = SimulatedPKI.load(pki.directory)
    raw = _quote(fresh)
    collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json(fresh))
    assert _verify(raw, collateral, fresh).status == "UpToDate"
    assert b"BEGIN CERTIFICATE" in path.read_bytes() and _mode(path) == 0o600
    assert "PRIVATE" not in repr(fresh.pck_leaf("UpToDate"))


def test_reset_refuses_a_directory_with_foreign_files(tmp_path: Path) -> None:
    directory = tmp_path / "not-a-pki"
    directory.mkdir()
    (directory / "thesis.tex").write_text("precious")
    with pytest.raises(SimulatedPKIError, match="refusing to delete"):
        SimulatedPKI.reset(directory)
    assert (directory / "thesis.tex").read_text() == "precious"


def test_default_dir_follows_env_then_jupyter_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PPML_SIM_PKI_DIR", str(tmp_path / "chosen"))
    assert default_pki_dir() == tmp_path / "chosen"
    monkeypatch.delenv("PPML_SIM_PKI_DIR")
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jd"))
    assert default_pki_dir() == tmp_path / "jd" / "ppml" / "simulated-pki"


# ---- the attester -------------------------------------------------------------------------


def test_attester_is_cheap_to_create_and_makes_pki_on_first_quote(tmp_path: Path) -> None:
    directory = tmp_path / "lazy"
    attester = SimulatedAttester(directory)
    assert not directory.exists()
    assert SimulatedAttester.available() and attester.simulated and attester.kind == "simulated"
    attester.quote(REPORT_DATA)
    assert SimulatedPKI.exists(directory)


def test_attester_uses_env_pki_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPML_SIM_PKI_DIR", str(tmp_path / "from-env"))
    attester = get_attester("simulated")
    assert isinstance(attester, SimulatedAttester)
    assert attester.describe()["pki_dir"] == str(tmp_path / "from-env")


def test_attester_defaults_and_measurements(tmp_path: Path) -> None:
    attester = SimulatedAttester(tmp_path / "pki")
    quote = dcap_qvl.parse_quote(attester.quote(REPORT_DATA))
    assert quote.report.mr_enclave == package_measurement()
    assert quote.report.mr_signer == attester.pki.default_mrsigner
    facts = attester.describe()
    assert facts["simulated"] is True and "SIMULATED" in str(facts["warning"])
    assert facts["mrenclave"] == package_measurement().hex()
    assert (facts["isv_prod_id"], facts["isv_svn"], facts["tcb_status"]) == (1, 1, "UpToDate")
    assert facts["root_fingerprint"] == attester.pki.root_fingerprint
    report = dcap_qvl.verify_with_root_ca(
        attester.quote(REPORT_DATA),
        dcap_qvl.QuoteCollateralV3.from_json(attester.collateral()),
        attester.pki.root_der,
        int(time.time()),
    )
    body = json.loads(report.to_json())["report"]["SgxEnclave"]
    assert (body["isv_prod_id"], body["isv_svn"]) == (1, 1)


def test_package_measurement_changes_with_the_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ppml_kernel.tee.simulated import measurement

    fake = tmp_path / "pkg"
    fake.mkdir()
    (fake / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(measurement, "package_root", lambda: fake)
    measurement.package_measurement.cache_clear()
    try:
        first = measurement.package_measurement()
        measurement.package_measurement.cache_clear()
        (fake / "a.py").write_text("x = 2\n")
        assert measurement.package_measurement() != first
    finally:
        measurement.package_measurement.cache_clear()


def test_env_overrides_for_a_rogue_enclave(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPML_SIM_MRENCLAVE", "ab" * 32)
    monkeypatch.setenv("PPML_SIM_MRSIGNER", "cd" * 32)
    monkeypatch.setenv("PPML_SIM_ISVPRODID", "9")
    monkeypatch.setenv("PPML_SIM_ISVSVN", "0x10")
    monkeypatch.setenv("PPML_SIM_TCB_STATUS", "outofdate")
    attester = SimulatedAttester(tmp_path / "pki")
    raw = attester.quote(REPORT_DATA)
    quote = dcap_qvl.parse_quote(raw)
    assert quote.report.mr_enclave == bytes.fromhex("ab" * 32)
    assert quote.report.mr_signer == bytes.fromhex("cd" * 32)
    collateral = dcap_qvl.QuoteCollateralV3.from_json(attester.collateral())
    report = dcap_qvl.verify_with_root_ca(raw, collateral, attester.pki.root_der, int(time.time()))
    assert report.status == "OutOfDate"
    body = json.loads(report.to_json())["report"]["SgxEnclave"]
    assert (body["isv_prod_id"], body["isv_svn"]) == (9, 16)
    # Arguments beat the environment.
    explicit = SimulatedAttester(tmp_path / "pki", mrenclave=MRENCLAVE, tcb_status="UpToDate")
    assert dcap_qvl.parse_quote(explicit.quote(REPORT_DATA)).report.mr_enclave == MRENCLAVE


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("PPML_SIM_MRENCLAVE", "xyz", r"\$PPML_SIM_MRENCLAVE must be 64 hex"),
        ("PPML_SIM_MRSIGNER", "ab" * 31, r"\$PPML_SIM_MRSIGNER must be 32 bytes"),
        ("PPML_SIM_ISVSVN", "-1", r"\$PPML_SIM_ISVSVN must be an integer"),
        ("PPML_SIM_ISVPRODID", "many", r"\$PPML_SIM_ISVPRODID must be an integer"),
        ("PPML_SIM_TCB_STATUS", "Shiny", r"\$PPML_SIM_TCB_STATUS 'Shiny' is not one of"),
    ],
)
def test_bad_env_values_fail_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(AttesterError, match=message):
        SimulatedAttester(tmp_path / "pki")


def test_attester_debug_quote_is_rejected(tmp_path: Path) -> None:
    attester = SimulatedAttester(tmp_path / "pki", debug=True)
    collateral = dcap_qvl.QuoteCollateralV3.from_json(attester.collateral())
    with pytest.raises(ValueError, match="Debug mode is enabled"):
        dcap_qvl.verify_with_root_ca(
            attester.quote(REPORT_DATA), collateral, attester.pki.root_der, int(time.time())
        )


def test_attester_checks_report_data(tmp_path: Path) -> None:
    attester = SimulatedAttester(tmp_path / "pki")
    with pytest.raises(ValueError, match="64 bytes"):
        attester.quote(b"\0" * 63)
    with pytest.raises(TypeError):
        attester.quote("not bytes")  # type: ignore[arg-type]


def test_attester_follows_a_reset_by_another_process(tmp_path: Path) -> None:
    attester = SimulatedAttester(tmp_path / "pki")
    old_root = attester.pki.root_fingerprint
    time.sleep(0.01)  # distinct mtime on coarse filesystems
    new = SimulatedPKI.reset(tmp_path / "pki")
    raw = attester.quote(REPORT_DATA)
    assert attester.pki.root_fingerprint == new.root_fingerprint != old_root
    collateral = dcap_qvl.QuoteCollateralV3.from_json(attester.collateral())
    assert _verify(raw, collateral, new).status == "UpToDate"


# ---- speed --------------------------------------------------------------------------------


def test_build_and_verify_median_time(pki: SimulatedPKI, collateral) -> None:
    _verify(_quote(pki), collateral, pki)  # warm the per-level template
    samples = []
    for _ in range(200):
        start = time.perf_counter()
        raw = _quote(pki)
        _verify(raw, collateral, pki)
        samples.append(time.perf_counter() - start)
    median_ms = statistics.median(samples) * 1000
    print(f"\nsimulated quote build + dcap-qvl verify: median {median_ms:.3f} ms over 200 runs")
    assert median_ms < 50
