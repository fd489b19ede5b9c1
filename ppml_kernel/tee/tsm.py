"""TDX quotes in a confidential VM, through Linux configfs-tsm (Linux 6.7+).

The kernel ABI (Documentation/ABI/testing/configfs-tsm-report): ``mkdir`` a report
directory under ``/sys/kernel/config/tsm/report``, write up to 64 bytes to ``inblob``,
read ``outblob`` (the quote; the kernel fetches it from the host's quote generation
service during the read), ``provider`` (``tdx_guest``) and ``generation`` (how many
times any attribute of this directory was written). Each request gets a directory of
its own, and the generation must be exactly 1 afterwards (a fresh directory starts at
0 and we write once): anything else means another writer touched our directory. The
directory is removed afterwards so requests do not leak kernel objects.

Only TDX is accepted: a SEV-SNP guest's outblob is an SNP report, which this
project's verifier (dcap-qvl) does not take.

Untested on TDX hardware; see docs/tee-backends.md for what was tested.
"""

from __future__ import annotations

import errno
import logging
import os
import time
import uuid
from typing import ClassVar

from ppml_kernel.tee._layout import SelfCheckingAttester
from ppml_kernel.tee.base import (
    AttesterError,
    AttesterUnavailable,
    write_report_data_file,
)

log = logging.getLogger(__name__)

DEFAULT_ROOT = "/sys/kernel/config/tsm/report"
TDX_PROVIDER = "tdx_guest"
_TRANSIENT = frozenset({errno.EBUSY, errno.EAGAIN, errno.EINTR})


def _is_tdx_guest(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Linux lists the ``tdx_guest`` CPU flag inside a TD."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            return any(line.startswith("flags") and "tdx_guest" in line.split() for line in f)
    except OSError:
        return False


class TsmAttester(SelfCheckingAttester):
    """Quotes from configfs-tsm in an Intel TDX guest (TDX quote v4/v5)."""

    kind: ClassVar[str] = "tdx"
    description: ClassVar[str] = "Intel TDX confidential VM, quotes via configfs-tsm"

    def __init__(
        self,
        root: str = DEFAULT_ROOT,
        *,
        timeout: float = 60.0,
        poll: float = 0.05,
        provider: str = TDX_PROVIDER,
    ) -> None:
        self.root = root
        self.timeout = timeout
        self.poll = poll
        self.provider = provider

    @classmethod
    def available(cls) -> bool:
        return os.path.isdir(DEFAULT_ROOT) and _is_tdx_guest()

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "root": self.root, "provider": self.provider}

    def quote_source(self) -> str:
        return f"configfs-tsm {self.root}"

    def _produce_quote(self, data: bytes) -> bytes:
        report_dir = self._make_report_dir()
        try:
            write_report_data_file(os.path.join(report_dir, "inblob"), data)
            quote = self._read_outblob(report_dir)
            provider = self._read_text(report_dir, "provider")
            generation = self._read_text(report_dir, "generation")
        finally:
            self._remove(report_dir)
        if provider != self.provider:
            raise AttesterError(
                f"configfs-tsm provider is {provider!r}, expected {self.provider!r}: this "
                "guest is not an Intel TDX guest (SEV-SNP reports are not supported)"
            )
        if generation != "1":
            raise AttesterError(
                f"configfs-tsm report {report_dir} was written {generation} times, not "
                "once: another process wrote to it concurrently; refusing the quote"
            )
        return quote

    # -- steps ---------------------------------------------------------------------

    def _make_report_dir(self) -> str:
        path = os.path.join(self.root, f"ppml-{os.getpid()}-{uuid.uuid4().hex}")
        try:
            os.mkdir(path)
        except FileNotFoundError:
            raise AttesterUnavailable(
                f"{self.root} does not exist: not a TDX guest with configfs-tsm "
                "(Linux 6.7+, CONFIG_TSM_REPORTS, configfs mounted at /sys/kernel/config)"
            ) from None
        except PermissionError:
            raise AttesterError(
                f"no permission to create a report under {self.root} (configfs-tsm "
                "reports need root, or a udev rule granting the kernel's user access)"
            ) from None
        except OSError as exc:
            raise AttesterError(f"cannot create {path}: {exc.strerror or exc}") from None
        return path

    def _read_outblob(self, report_dir: str) -> bytes:
        """Read the quote, retrying transient errors until ``timeout``.

        On configfs the read itself blocks until the quote exists. The wait also
        tolerates an ``outblob`` that is absent or empty for a moment, which is how a
        test directory (a thread playing the kernel) behaves.
        """
        path = os.path.join(report_dir, "outblob")
        deadline = time.monotonic() + self.timeout
        last = "no quote yet"
        while True:
            try:
                with open(path, "rb") as f:
                    blob = f.read()
                if blob:
                    return blob
                last = "outblob was empty"
            except FileNotFoundError:
                last = "outblob does not exist"
            except OSError as exc:
                if exc.errno not in _TRANSIENT:
                    raise AttesterError(_outblob_error(path, exc)) from None
                last = f"{errno.errorcode.get(exc.errno or 0, exc.errno)} from the kernel"
            if time.monotonic() >= deadline:
                raise AttesterError(
                    f"no TDX quote from {path} after {self.timeout:g}s ({last}): is the "
                    "host's quote generation service (QGS) running and reachable?"
                )
            time.sleep(self.poll)

    def _read_text(self, report_dir: str, name: str) -> str:
        path = os.path.join(report_dir, name)
        try:
            with open(path, encoding="ascii") as f:
                return f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AttesterError(f"cannot read {path}: {exc}") from None

    def _remove(self, report_dir: str) -> None:
        try:
            os.rmdir(report_dir)
        except OSError as exc:
            # On configfs rmdir always succeeds for a report we made; anywhere else
            # (a test directory) the attribute files keep it non-empty.
            log.warning("could not remove configfs-tsm report %s: %s", report_dir, exc)


def _outblob_error(path: str, exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    if exc.errno == errno.EIO:
        return (
            f"reading {path} failed with EIO: the host's quote generation service did "
            "not return a quote (check QGS on the host and the PCCS it uses)"
        )
    if exc.errno in (errno.ENOTTY, errno.ENXIO):
        return f"reading {path} failed with {name}: no TSM provider is registered"
    return f"reading {path} failed: {name} ({exc.strerror})"
