"""DCAP quotes inside a Gramine-SGX enclave, through ``/dev/attestation``.

Gramine's pseudo-filesystem: ``attestation_type`` says ``dcap`` (or ``none`` when the
manifest has no ``sgx.remote_attestation``, or under ``gramine-direct``); writing 64
bytes to ``user_report_data`` and then opening ``quote`` for reading yields a quote for
them. The files are process-local, so one lock per process keeps two threads from
interleaving a write and a read; the returned quote is checked to carry our bytes.

Untested on SGX hardware; see docs/tee-backends.md for what was tested.
"""

from __future__ import annotations

import os
import threading
from typing import ClassVar

from ppml_kernel.tee._layout import SelfCheckingAttester
from ppml_kernel.tee.base import (
    AttesterError,
    AttesterUnavailable,
    write_report_data_file,
)

DEFAULT_ROOT = "/dev/attestation"
_LOCK = threading.Lock()


class GramineAttester(SelfCheckingAttester):
    """Quotes from Gramine's ``/dev/attestation`` pseudo-files (DCAP, SGX quote v3)."""

    kind: ClassVar[str] = "gramine"
    description: ClassVar[str] = "SGX enclave (Gramine), DCAP quotes via /dev/attestation"

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = root

    @classmethod
    def available(cls) -> bool:
        return os.path.isfile(os.path.join(DEFAULT_ROOT, "attestation_type"))

    def _path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def attestation_type(self) -> str:
        """What the manifest enabled: ``dcap``, ``epid`` (retired) or ``none``."""
        path = self._path("attestation_type")
        try:
            with open(path, encoding="ascii") as f:
                return f.read().strip().lower()
        except FileNotFoundError:
            raise AttesterUnavailable(
                f"{path} does not exist: not running inside a Gramine enclave"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise AttesterError(f"cannot read {path}: {exc}") from None

    def quote_source(self) -> str:
        return f"Gramine {self.root}"

    def _produce_quote(self, data: bytes) -> bytes:
        kind = self.attestation_type()
        if kind != "dcap":
            raise AttesterError(_wrong_type_message(kind))
        with _LOCK:
            write_report_data_file(self._path("user_report_data"), data)
            return self._read_quote()

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "root": self.root}

    def _read_quote(self) -> bytes:
        path = self._path("quote")
        try:
            with open(path, "rb") as f:
                quote = f.read()
        except OSError as exc:
            raise AttesterError(
                f"cannot read {path}: {exc.strerror or exc} (is the host's AESM service "
                "running with the DCAP quote provider library configured?)"
            ) from None
        if not quote:
            raise AttesterError(f"{path} returned an empty quote")
        return quote


def _wrong_type_message(kind: str) -> str:
    if kind == "none":
        return (
            "Gramine attestation type is 'none': set sgx.remote_attestation = \"dcap\" in "
            "the manifest and run under gramine-sgx (gramine-direct has no attestation)"
        )
    if kind == "epid":
        return (
            "Gramine attestation type is 'epid': EPID attestation is retired and not "
            'supported; set sgx.remote_attestation = "dcap" in the manifest'
        )
    return f"Gramine attestation type is {kind!r}; only 'dcap' quotes are supported"
