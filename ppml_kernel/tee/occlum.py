"""DCAP quotes inside an Occlum enclave, through Occlum's ``/dev/sgx`` ioctls.

Occlum's LibOS exposes a character device ``/dev/sgx`` whose ioctls (magic ``'s'``)
produce a DCAP quote for 64 bytes of report data (occlum/occlum
``src/libos/src/fs/dev_fs/dev_sgx/``, ``tools/toolchains/dcap_lib/``). Calling them
from Python with :func:`fcntl.ioctl` and a :mod:`ctypes` struct of pointers avoids
shipping a native helper inside the enclave image.

Errors, as Occlum reports them: ``EIO`` means the DCAP quote generator did not start
(no quote provider library or PCCS on the host); ``EBUSY`` means the quoting enclave
is busy, so we retry with backoff. Occlum 0.30 and later fold *every* ``/dev/sgx``
failure into ``EINVAL`` (the cause only reaches the LibOS log), so after the size
query succeeded an ``EINVAL`` from quote generation is retried like ``EBUSY``.

Untested on SGX hardware; see docs/tee-backends.md for what was tested.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import time
from typing import ClassVar

from ppml_kernel.tee._layout import SelfCheckingAttester
from ppml_kernel.tee.base import (
    REPORT_DATA_SIZE,
    AttesterError,
    AttesterUnavailable,
)

DEFAULT_DEVICE = "/dev/sgx"
SGX_MAGIC = "s"

# Linux asm-generic/ioctl.h layout: dir(2) | size(14) | type(8) | nr(8).
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = 8
_IOC_SIZESHIFT = 16
_IOC_DIRSHIFT = 30
_IOC_READ = 2
_IOC_WRITE = 1
_IOC_SIZEMASK = (1 << 14) - 1


def _ioc(direction: int, magic: str, nr: int, size: int) -> int:
    if not 0 <= size <= _IOC_SIZEMASK:
        raise ValueError(f"ioctl argument size {size} does not fit in 14 bits")
    return (
        (direction << _IOC_DIRSHIFT)
        | (size << _IOC_SIZESHIFT)
        | (ord(magic) << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
    )


def _ior(magic: str, nr: int, size: int) -> int:
    """``_IOR``: the kernel (here: the LibOS) writes ``size`` bytes back to us."""
    return _ioc(_IOC_READ, magic, nr, size)


def _iowr(magic: str, nr: int, size: int) -> int:
    """``_IOWR``: the argument is read and written."""
    return _ioc(_IOC_READ | _IOC_WRITE, magic, nr, size)


_u8p = ctypes.POINTER(ctypes.c_uint8)
_u32p = ctypes.POINTER(ctypes.c_uint32)


class GenDcapQuoteArg(ctypes.Structure):
    """``IoctlGenDCAPQuoteArg``: report data in, quote size in, quote bytes out."""

    _fields_: ClassVar = [
        ("report_data", _u8p),  # const sgx_report_data_t * (64 B)
        ("quote_size", _u32p),  # uint32_t *: must be >= the real quote size
        ("quote_buf", _u8p),  # uint8_t *: receives quote_size bytes
    ]


class VerDcapQuoteArg(ctypes.Structure):
    """``IoctlVerDCAPQuoteArg``; only its size matters here (we verify with dcap-qvl)."""

    _fields_: ClassVar = [
        ("quote_buf", _u8p),
        ("quote_size", ctypes.c_uint32),
        ("collateral_expiration_status", _u32p),
        ("quote_verification_result", ctypes.c_void_p),
        ("supplemental_data_size", ctypes.c_uint32),
        ("supplemental_data", _u8p),
    ]


class CreateReportArg(ctypes.Structure):
    """``IoctlCreateReportArg`` for local attestation (EREPORT)."""

    _fields_: ClassVar = [
        ("target_info", ctypes.c_void_p),
        ("report_data", ctypes.c_void_p),
        ("report", ctypes.c_void_p),
    ]


SGX_TARGET_INFO_SIZE = 512

SGXIOC_SELF_TARGET = _ior(SGX_MAGIC, 3, SGX_TARGET_INFO_SIZE)
SGXIOC_CREATE_REPORT = _iowr(SGX_MAGIC, 4, ctypes.sizeof(CreateReportArg))
SGXIOC_GET_DCAP_QUOTE_SIZE = _ior(SGX_MAGIC, 7, ctypes.sizeof(ctypes.c_uint32))
SGXIOC_GEN_DCAP_QUOTE = _iowr(SGX_MAGIC, 8, ctypes.sizeof(GenDcapQuoteArg))
SGXIOC_VER_DCAP_QUOTE = _iowr(SGX_MAGIC, 10, ctypes.sizeof(VerDcapQuoteArg))

MAX_QUOTE_SIZE = 64 * 1024  # real DCAP quotes are ~4.6-5 KiB; anything huge is a bug

NOT_READY = (
    "Occlum's DCAP quote generator is not ready ({what} failed with {name} on {device}): "
    "the host needs Intel's DCAP quote provider library (libsgx-dcap-default-qpl) "
    "pointing at a reachable PCCS, and the enclave must be built with SGX_MODE=HW; "
    "run with OCCLUM_LOG_LEVEL=error to see the LibOS's reason"
)


def is_occlum_device(path: str) -> bool:
    """True if ``path`` is a character device, as Occlum's ``/dev/sgx`` is.

    On a host with Intel's DCAP driver, ``/dev/sgx`` is a *directory* (``enclave``,
    ``provision``): that is not Occlum, and ioctls on it would mean something else.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode)


class OcclumAttester(SelfCheckingAttester):
    """Quotes from Occlum's ``/dev/sgx`` (DCAP, SGX quote v3)."""

    kind: ClassVar[str] = "occlum"
    description: ClassVar[str] = "SGX enclave (Occlum LibOS), DCAP quotes via /dev/sgx"

    def __init__(
        self,
        device: str = DEFAULT_DEVICE,
        *,
        retries: int = 5,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
    ) -> None:
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must not be negative")
        self.device = device
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff

    @classmethod
    def available(cls) -> bool:
        return is_occlum_device(DEFAULT_DEVICE)

    def quote_source(self) -> str:
        return f"Occlum {self.device}"

    def _produce_quote(self, data: bytes) -> bytes:
        fd = self._open()
        try:
            return self._generate(fd, data, self.quote_size(fd))
        finally:
            os.close(fd)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "device": self.device}

    # -- steps ---------------------------------------------------------------------

    def _open(self) -> int:
        if os.path.isdir(self.device):
            raise AttesterUnavailable(
                f"{self.device} is a directory (the host's SGX driver), not Occlum's "
                "device: the kernel is not running inside an Occlum enclave"
            )
        try:
            return os.open(self.device, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise AttesterUnavailable(
                f"{self.device} does not exist: not running inside an Occlum enclave"
            ) from None
        except OSError as exc:
            raise AttesterError(
                f"cannot open {self.device}: {errno.errorcode.get(exc.errno or 0, exc.errno)} "
                f"({exc.strerror})"
            ) from None

    def quote_size(self, fd: int) -> int:
        """Ask the LibOS how large a quote buffer must be (``SGXIOC_GET_DCAP_QUOTE_SIZE``)."""
        out = ctypes.c_uint32(0)
        try:
            fcntl.ioctl(fd, SGXIOC_GET_DCAP_QUOTE_SIZE, out)
        except OSError as exc:
            raise self._error(exc, "the quote-size request") from None
        size = out.value
        if not 0 < size <= MAX_QUOTE_SIZE:
            raise AttesterError(f"{self.device} reported an implausible quote size of {size}")
        return size

    def _generate(self, fd: int, data: bytes, size: int) -> bytes:
        report_data = (ctypes.c_uint8 * REPORT_DATA_SIZE).from_buffer_copy(data)
        quote_size = ctypes.c_uint32(size)
        quote_buf = (ctypes.c_uint8 * size)()
        arg = GenDcapQuoteArg(
            ctypes.cast(report_data, _u8p),
            ctypes.pointer(quote_size),
            ctypes.cast(quote_buf, _u8p),
        )
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                fcntl.ioctl(fd, SGXIOC_GEN_DCAP_QUOTE, arg)
                break
            except OSError as exc:
                if exc.errno not in _RETRYABLE or attempt == self.retries:
                    raise self._error(exc, "quote generation", attempts=attempt + 1) from None
            time.sleep(delay)
            delay = min(delay * 2, self.max_backoff)
        # Occlum copies exactly its quote size into the buffer and leaves *quote_size
        # alone; honour a smaller value should a later LibOS start writing it back.
        length = min(quote_size.value or size, size)
        return bytes(quote_buf[:length])

    def _error(self, exc: OSError, what: str, attempts: int = 1) -> AttesterError:
        code = exc.errno or 0
        name = errno.errorcode.get(code, str(code))
        if code == errno.EIO:
            return AttesterError(NOT_READY.format(what=what, name=name, device=self.device))
        if code in (errno.ENOTTY, errno.ENOSYS):
            return AttesterError(
                f"{self.device} does not support Occlum's SGX ioctls ({what} failed with "
                f"{name}): it is not Occlum's /dev/sgx, or the LibOS was built without DCAP"
            )
        tries = f" {attempts} times" if attempts > 1 else ""
        if code == errno.EINVAL:
            return AttesterError(
                f"{self.device} refused {what}{tries} (EINVAL). Occlum 0.30+ reports every "
                "/dev/sgx failure as EINVAL, a busy quoting enclave included; the usual "
                "cause is a DCAP quote generator that is not ready (run with "
                "OCCLUM_LOG_LEVEL=error to see the LibOS's reason)"
            )
        if code in _RETRYABLE:
            return AttesterError(
                f"Occlum's quoting enclave stayed busy: {what} failed{tries} ({name}); "
                "try again, or check the host's AESM service and quote provider"
            )
        return AttesterError(f"{what} on {self.device} failed: {name} ({exc.strerror})")


# EBUSY: Occlum's "quote generator temporarily busy"; EINVAL: the same, as Occlum 0.30+
# reports it; EAGAIN/EINTR: the usual transient errnos.
_RETRYABLE = frozenset({errno.EBUSY, errno.EAGAIN, errno.EINTR, errno.EINVAL})
