"""Hardware TEE backends: every part that can run without SGX or TDX hardware.

* Occlum: ioctl numbers and struct layout against Occlum's source; the real
  ``fcntl.ioctl`` + ctypes path against a C stand-in for Occlum's ``/dev/sgx`` loaded
  with LD_PRELOAD (``tests/support/fake_occlum_sgx.c``, needs gcc); error paths on
  files that are not the device.
* Gramine: the ``/dev/attestation`` file protocol against a temporary directory.
* configfs-tsm: the mkdir/inblob/outblob/provider/generation protocol against a
  temporary directory where a thread plays the kernel.

Quotes used as templates are real hardware quotes from tests/data/vectors.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import dcap_qvl
import pytest

from ppml_kernel.tee import AttesterError, AttesterUnavailable, attester_class, get_attester
from ppml_kernel.tee import occlum as occ
from ppml_kernel.tee._layout import embedded_report_data, report_data_offset
from ppml_kernel.tee.gramine import GramineAttester
from ppml_kernel.tee.occlum import OcclumAttester, is_occlum_device
from ppml_kernel.tee.tsm import TsmAttester

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "data" / "vectors" / "dcap-qvl"
SGX_QUOTE = VECTORS / "sgx_quote"
TDX_V4_QUOTE = VECTORS / "tdx_quote"
TDX_V5_QUOTE = VECTORS / "tdx_quote_outdated"
SHIM_SOURCE = ROOT / "tests" / "support" / "fake_occlum_sgx.c"

REPORT_DATA = hashlib.sha512(b"ppml-kernel hardware backend test").digest()


def with_report_data(template: Path, report_data: bytes) -> bytes:
    quote = bytearray(template.read_bytes())
    offset = report_data_offset(bytes(quote))
    quote[offset : offset + 64] = report_data
    return bytes(quote)


def parsed_report_data(quote: bytes) -> bytes:
    value = dcap_qvl.parse_quote(quote).report.report_data
    return bytes.fromhex(value) if isinstance(value, str) else bytes(value)


# -- quote layout helper -----------------------------------------------------------


@pytest.mark.parametrize("path", [SGX_QUOTE, TDX_V4_QUOTE, TDX_V5_QUOTE])
def test_report_data_offset_agrees_with_dcap_qvl(path: Path) -> None:
    quote = path.read_bytes()
    assert embedded_report_data(quote) == parsed_report_data(quote)


def test_report_data_offset_rejects_unknown_quotes() -> None:
    with pytest.raises(AttesterError, match="shorter than the 48-byte header"):
        report_data_offset(b"\x03\x00")
    bogus = bytearray(SGX_QUOTE.read_bytes())
    bogus[0] = 9
    with pytest.raises(AttesterError, match="version 9"):
        report_data_offset(bytes(bogus))


# -- factory -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("occlum", OcclumAttester), ("gramine", GramineAttester), ("tdx", TsmAttester)],
)
def test_factory_builds_hardware_backends(kind: str, cls: type) -> None:
    assert attester_class(kind) is cls
    attester = get_attester(kind)
    assert isinstance(attester, cls)
    assert attester.kind == kind
    assert attester.describe()["simulated"] is False


def test_hardware_backends_not_detected_on_this_machine() -> None:
    # This CI machine has no Occlum /dev/sgx, no Gramine, no TDX; detection must say so
    # rather than pick a backend that would fail at the first quote.
    for cls in (OcclumAttester, GramineAttester, TsmAttester):
        assert cls.available() is False


# -- Occlum: ioctl numbers and structs --------------------------------------------


def test_occlum_ioctl_numbers_match_occlum() -> None:
    # Values from occlum/occlum tools/toolchains/dcap_lib/src/occlum_dcap.rs and the brief.
    assert occ.SGXIOC_GET_DCAP_QUOTE_SIZE == 0x80047307
    assert occ.SGXIOC_GEN_DCAP_QUOTE == 0xC0187308
    assert occ.SGXIOC_VER_DCAP_QUOTE == 0xC030730A
    assert occ.SGXIOC_SELF_TARGET == 0x82007303
    assert occ.SGXIOC_CREATE_REPORT == 0xC0187304


def test_occlum_ioctl_helpers_follow_linux_encoding() -> None:
    # _IOR('s', 7, u32): dir=read(2)<<30 | size 4<<16 | 's'<<8 | 7
    assert occ._ior("s", 7, 4) == (2 << 30) | (4 << 16) | (0x73 << 8) | 7
    assert occ._iowr("s", 8, 24) == (3 << 30) | (24 << 16) | (0x73 << 8) | 8
    with pytest.raises(ValueError, match="14 bits"):
        occ._ior("s", 1, 1 << 14)


def test_occlum_structs_have_occlums_layout() -> None:
    gen = occ.GenDcapQuoteArg
    assert ctypes.sizeof(gen) == 24
    assert [gen.report_data.offset, gen.quote_size.offset, gen.quote_buf.offset] == [0, 8, 16]
    ver = occ.VerDcapQuoteArg
    assert ctypes.sizeof(ver) == 48
    offsets = [getattr(ver, name).offset for name, _ in ver._fields_]
    assert offsets == [0, 8, 16, 24, 32, 40]
    assert ctypes.sizeof(occ.CreateReportArg) == 24


# -- Occlum: device detection and error paths -------------------------------------


def test_occlum_device_detection(tmp_path: Path) -> None:
    regular = tmp_path / "sgx"
    regular.write_bytes(b"")
    host_driver = tmp_path / "sgx-dir"
    (host_driver / "enclave").mkdir(parents=True)
    assert is_occlum_device("/dev/null") is True  # a character device, like Occlum's
    assert is_occlum_device(str(regular)) is False
    assert is_occlum_device(str(host_driver)) is False  # host DCAP driver layout
    assert is_occlum_device(str(tmp_path / "missing")) is False


def test_occlum_missing_device_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(AttesterUnavailable, match="not running inside an Occlum enclave"):
        OcclumAttester(str(tmp_path / "missing")).quote(REPORT_DATA)


def test_occlum_host_driver_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(AttesterUnavailable, match="is a directory"):
        OcclumAttester(str(tmp_path)).quote(REPORT_DATA)


@pytest.mark.parametrize("device", ["regular", "/dev/null"])
def test_occlum_on_a_non_sgx_file_says_enotty(tmp_path: Path, device: str) -> None:
    if device == "regular":
        path = tmp_path / "not-sgx"
        path.write_bytes(b"\0" * 16)
        device = str(path)
    with pytest.raises(AttesterError, match="ENOTTY") as info:
        OcclumAttester(device).quote(REPORT_DATA)
    assert "does not support Occlum's SGX ioctls" in str(info.value)


def test_occlum_checks_report_data_before_touching_the_device(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        OcclumAttester(str(tmp_path / "missing")).quote(b"short")


# -- Occlum: the ioctl path against the LD_PRELOAD stand-in --------------------------


@pytest.fixture(scope="module")
def fake_sgx_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.fail("gcc is required to build tests/support/fake_occlum_sgx.c (apt: gcc)")
    out = tmp_path_factory.mktemp("fake-sgx") / "fake_occlum_sgx.so"
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(out), str(SHIM_SOURCE), "-ldl"],
        check=True,
    )
    return out


_CHILD = """
import sys
from ppml_kernel.tee.occlum import OcclumAttester
from ppml_kernel.tee.base import AttesterError
device, report_data, retries = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3])
try:
    quote = OcclumAttester(device, retries=retries, backoff=0.001).quote(report_data)
except AttesterError as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
sys.stdout.write(quote.hex())
"""


def run_occlum_child(
    library: Path, tmp_path: Path, mode: str, retries: int = 5
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    device = tmp_path / "dev-sgx"  # a regular file; the shim answers ioctls on it
    device.write_bytes(b"")
    log = tmp_path / "ioctl.log"
    env = {
        **os.environ,
        "LD_PRELOAD": str(library),
        "FAKE_SGX_DEVICE": str(device),
        "FAKE_SGX_QUOTE": str(SGX_QUOTE),
        "FAKE_SGX_MODE": mode,
        "FAKE_SGX_LOG": str(log),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(device), REPORT_DATA.hex(), str(retries)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls


def test_occlum_quote_through_ioctls(fake_sgx_library: Path, tmp_path: Path) -> None:
    proc, calls = run_occlum_child(fake_sgx_library, tmp_path, "ok")
    assert proc.returncode == 0, proc.stderr
    quote = bytes.fromhex(proc.stdout)
    template = SGX_QUOTE.read_bytes()
    assert len(quote) == len(template)
    assert parsed_report_data(quote) == REPORT_DATA  # our pointer reached the "LibOS"
    assert quote[:368] == template[:368] and quote[432:] == template[432:]
    assert calls == ["SIZE 0", "GEN 0"]


def test_occlum_retries_while_busy(fake_sgx_library: Path, tmp_path: Path) -> None:
    proc, calls = run_occlum_child(fake_sgx_library, tmp_path, "busy:3")
    assert proc.returncode == 0, proc.stderr
    assert parsed_report_data(bytes.fromhex(proc.stdout)) == REPORT_DATA
    assert calls == ["SIZE 0", "GEN -16", "GEN -16", "GEN -16", "GEN 0"]


def test_occlum_retries_are_bounded(fake_sgx_library: Path, tmp_path: Path) -> None:
    proc, calls = run_occlum_child(fake_sgx_library, tmp_path, "busy:100", retries=2)
    assert proc.returncode == 3
    assert "stayed busy" in proc.stderr and "3 times" in proc.stderr
    assert calls.count("GEN -16") == 3


def test_occlum_einval_is_retried_like_busy(fake_sgx_library: Path, tmp_path: Path) -> None:
    # Occlum 0.30+ folds EBUSY into EINVAL; generation must still get through.
    proc, calls = run_occlum_child(fake_sgx_library, tmp_path, "einval:2")
    assert proc.returncode == 0, proc.stderr
    assert calls == ["SIZE 0", "GEN -22", "GEN -22", "GEN 0"]


def test_occlum_eio_means_not_ready(fake_sgx_library: Path, tmp_path: Path) -> None:
    proc, calls = run_occlum_child(fake_sgx_library, tmp_path, "eio")
    assert proc.returncode == 3
    assert "quote generator is not ready" in proc.stderr
    assert "EIO" in proc.stderr
    assert calls == ["SIZE -5"]  # no generation attempt without a size


def test_occlum_refuses_a_quote_for_other_report_data(
    fake_sgx_library: Path, tmp_path: Path
) -> None:
    proc, _ = run_occlum_child(fake_sgx_library, tmp_path, "wrongdata")
    assert proc.returncode == 3
    assert "different report data" in proc.stderr


# -- Gramine ---------------------------------------------------------------------


def gramine_dir(tmp_path: Path, attestation_type: str, quote: bytes | None) -> Path:
    root = tmp_path / "attestation"
    root.mkdir()
    (root / "attestation_type").write_text(attestation_type + "\n")
    (root / "user_report_data").write_bytes(b"\0" * 64)
    if quote is not None:
        (root / "quote").write_bytes(quote)
    return root


def test_gramine_quote_file_protocol(tmp_path: Path) -> None:
    root = gramine_dir(tmp_path, "dcap", with_report_data(SGX_QUOTE, REPORT_DATA))
    quote = GramineAttester(str(root)).quote(REPORT_DATA)
    assert (root / "user_report_data").read_bytes() == REPORT_DATA
    assert parsed_report_data(quote) == REPORT_DATA


def test_gramine_without_remote_attestation_is_a_clear_error(tmp_path: Path) -> None:
    root = gramine_dir(tmp_path, "none", None)
    with pytest.raises(AttesterError, match="Gramine attestation type is 'none'") as info:
        GramineAttester(str(root)).quote(REPORT_DATA)
    assert 'sgx.remote_attestation = "dcap"' in str(info.value)
    assert (root / "user_report_data").read_bytes() == b"\0" * 64  # nothing written


def test_gramine_epid_is_refused(tmp_path: Path) -> None:
    root = gramine_dir(tmp_path, "epid", None)
    with pytest.raises(AttesterError, match="EPID attestation is retired"):
        GramineAttester(str(root)).quote(REPORT_DATA)


def test_gramine_stale_quote_is_refused(tmp_path: Path) -> None:
    # Gramine returns a quote for whatever user_report_data held last; a quote for
    # other bytes must never be handed on as if it were ours.
    root = gramine_dir(tmp_path, "dcap", SGX_QUOTE.read_bytes())
    with pytest.raises(AttesterError, match="different report data"):
        GramineAttester(str(root)).quote(REPORT_DATA)


def test_gramine_empty_quote_is_refused(tmp_path: Path) -> None:
    root = gramine_dir(tmp_path, "dcap", b"")
    with pytest.raises(AttesterError, match="empty quote"):
        GramineAttester(str(root)).quote(REPORT_DATA)


def test_gramine_outside_gramine_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(AttesterUnavailable, match="not running inside a Gramine enclave"):
        GramineAttester(str(tmp_path / "missing")).quote(REPORT_DATA)


# -- configfs-tsm ------------------------------------------------------------------


class FakeTsmKernel(threading.Thread):
    """Plays the kernel's configfs-tsm for report directories created under ``root``.

    For each new report directory: waits for a 64-byte ``inblob``, then publishes
    ``provider`` and ``generation`` and finally ``outblob`` (atomically, by rename),
    a template quote with REPORT_DATA set from ``inblob`` (or from ``answer``).
    """

    def __init__(
        self,
        root: Path,
        template: Path,
        *,
        provider: str = "tdx_guest",
        extra_writes: int = 0,
        delay: float = 0.0,
        answer: bytes | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.root, self.template, self.answer = root, template, answer
        self.provider, self.extra_writes, self.delay = provider, extra_writes, delay
        self.served: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for report in self.root.iterdir():
                inblob = report / "inblob"
                if report.name in self.served or not inblob.exists():
                    continue
                data = inblob.read_bytes()
                if len(data) != 64:
                    continue
                time.sleep(self.delay)
                (report / "provider").write_text(self.provider + "\n")
                (report / "generation").write_text(f"{1 + self.extra_writes}\n")
                staged = self.root.parent / f"{report.name}.outblob"
                staged.write_bytes(with_report_data(self.template, self.answer or data))
                os.replace(staged, report / "outblob")
                self.served.append(report.name)
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


@pytest.fixture
def tsm_root(tmp_path: Path) -> Path:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    return root


def run_tsm(root: Path, kernel: FakeTsmKernel | None, **kwargs: float) -> bytes:
    if kernel:
        kernel.start()
    try:
        return TsmAttester(str(root), poll=0.005, **kwargs).quote(REPORT_DATA)
    finally:
        if kernel:
            kernel.stop()


@pytest.mark.parametrize("template", [TDX_V4_QUOTE, TDX_V5_QUOTE])
def test_tsm_report_protocol(
    tsm_root: Path, template: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kernel = FakeTsmKernel(tsm_root, template, delay=0.05)
    with caplog.at_level(logging.WARNING, logger="ppml_kernel.tee.tsm"):
        quote = run_tsm(tsm_root, kernel)
    assert dcap_qvl.parse_quote(quote).quote_type() == "TDX"
    assert parsed_report_data(quote) == REPORT_DATA
    assert len(kernel.served) == 1
    name = kernel.served[0]
    assert name.startswith(f"ppml-{os.getpid()}-")
    assert (tsm_root / name / "inblob").read_bytes() == REPORT_DATA
    # configfs would delete the directory on rmdir; a plain directory cannot, and the
    # attester says so instead of failing the quote.
    assert f"could not remove configfs-tsm report {tsm_root / name}" in caplog.text


def test_tsm_each_request_gets_its_own_directory(tsm_root: Path) -> None:
    kernel = FakeTsmKernel(tsm_root, TDX_V4_QUOTE)
    kernel.start()
    try:
        attester = TsmAttester(str(tsm_root), poll=0.005)
        other = bytes(reversed(REPORT_DATA))
        assert parsed_report_data(attester.quote(REPORT_DATA)) == REPORT_DATA
        assert parsed_report_data(attester.quote(other)) == other
    finally:
        kernel.stop()
    assert len(set(kernel.served)) == 2


def test_tsm_concurrent_writer_is_detected(tsm_root: Path) -> None:
    kernel = FakeTsmKernel(tsm_root, TDX_V4_QUOTE, extra_writes=1)
    with pytest.raises(AttesterError, match="written 2 times, not once"):
        run_tsm(tsm_root, kernel)


def test_tsm_refuses_non_tdx_provider(tsm_root: Path) -> None:
    kernel = FakeTsmKernel(tsm_root, TDX_V4_QUOTE, provider="sev_guest")
    with pytest.raises(AttesterError, match="provider is 'sev_guest'"):
        run_tsm(tsm_root, kernel)


def test_tsm_times_out_without_a_quote(tsm_root: Path) -> None:
    started = time.monotonic()
    with pytest.raises(AttesterError, match=r"no TDX quote .* after 0.2s"):
        run_tsm(tsm_root, None, timeout=0.2)
    assert time.monotonic() - started < 30  # it gave up; it did not hang


def test_tsm_missing_configfs_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(AttesterUnavailable, match="configfs-tsm"):
        TsmAttester(str(tmp_path / "missing")).quote(REPORT_DATA)


def test_tsm_refuses_quote_for_other_report_data(tsm_root: Path) -> None:
    kernel = FakeTsmKernel(tsm_root, TDX_V4_QUOTE, answer=bytes(64))
    with pytest.raises(AttesterError, match="different report data"):
        run_tsm(tsm_root, kernel)
