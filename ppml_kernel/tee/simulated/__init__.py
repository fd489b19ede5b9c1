"""The SIMULATED enclave: real DCAP quotes from a per-installation fake SGX PKI.

For laptops, teaching, demos and tests. It protects nothing: the "enclave" is the
ordinary kernel process. Its quotes are real Intel SGX DCAP v3 bytes that dcap-qvl
verifies (chain, CRLs, TCB Info, QE Identity, QE binding, report signature), but
only against this installation's simulated root; Intel's root rejects them. A
verifier decides "simulated" by which root verified a quote, never by labels.

Heavy modules (``cryptography``) load on first quote, so creating the attester at
kernel start costs nothing and touches no disk.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ppml_kernel._lazy import lazy_exports
from ppml_kernel.tee.base import Attester, AttesterError, check_report_data
from ppml_kernel.tee.simulated.paths import env_pki_dir
from ppml_kernel.tee.simulated.tcb import DEFAULT_TCB_STATUS, TCB_STATUSES

if TYPE_CHECKING:
    from ppml_kernel.tee.simulated.pki import SimulatedPKI

ENV_MRENCLAVE = "PPML_SIM_MRENCLAVE"
ENV_MRSIGNER = "PPML_SIM_MRSIGNER"
ENV_ISVPRODID = "PPML_SIM_ISVPRODID"
ENV_ISVSVN = "PPML_SIM_ISVSVN"
ENV_TCB_STATUS = "PPML_SIM_TCB_STATUS"
ENV_DEBUG = "PPML_SIM_DEBUG"

DEFAULT_ISV_PROD_ID = 1
DEFAULT_ISV_SVN = 1

WARNING = (
    "SIMULATED enclave: no TEE, nothing is confidential; its quotes verify only "
    "against this installation's simulated root CA"
)

_LAZY = {
    "SimulatedPKI": "ppml_kernel.tee.simulated.pki",
    "SimulatedPKIError": "ppml_kernel.tee.simulated.pki",
    "default_pki_dir": "ppml_kernel.tee.simulated.paths",
    "ENV_PKI_DIR": "ppml_kernel.tee.simulated.paths",
    "build_quote": "ppml_kernel.tee.simulated.quote",
    "build_collateral": "ppml_kernel.tee.simulated.collateral",
    "collateral_json": "ppml_kernel.tee.simulated.collateral",
    "package_measurement": "ppml_kernel.tee.simulated.measurement",
}

__all__ = [
    "DEFAULT_TCB_STATUS",
    "ENV_DEBUG",
    "ENV_ISVPRODID",
    "ENV_ISVSVN",
    "ENV_MRENCLAVE",
    "ENV_MRSIGNER",
    "ENV_TCB_STATUS",
    "TCB_STATUSES",
    "SimulatedAttester",
    *_LAZY,
]
__getattr__ = lazy_exports(__name__, _LAZY)


def _measurement(value: bytes | str | None, env: str, what: str) -> bytes | None:
    source = f"${env}" if value is None else what
    if value is None:
        value = os.environ.get(env, "").strip() or None
        if value is None:
            return None
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value.strip())
        except ValueError:
            raise AttesterError(f"{source} must be 64 hex characters (32 bytes)") from None
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise AttesterError(f"{source} must be 32 bytes (64 hex characters)")
    return bytes(value)


def _u16(value: int | None, env: str, what: str, default: int) -> int:
    source = f"${env}" if value is None else what
    if value is None:
        text = os.environ.get(env, "").strip()
        if not text:
            return default
        try:
            value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
        except ValueError:
            raise AttesterError(f"{source} must be an integer in 0..65535") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise AttesterError(f"{source} must be an integer in 0..65535")
    return value


def _tcb_status(value: str | None) -> str:
    source = "tcb_status" if value is not None else f"${ENV_TCB_STATUS}"
    text = (value if value is not None else os.environ.get(ENV_TCB_STATUS, "")).strip()
    if not text:
        return DEFAULT_TCB_STATUS
    for status in TCB_STATUSES:
        if status.lower() == text.lower():
            return status
    raise AttesterError(f"{source} {text!r} is not one of: {', '.join(TCB_STATUSES)}")


def _debug(value: bool | None) -> bool:
    if value is not None:
        return bool(value)
    return os.environ.get(ENV_DEBUG, "").strip().lower() in {"1", "true", "yes", "on"}


class SimulatedAttester(Attester):
    """Produces SIMULATED SGX quotes signed by the installation's simulated PKI.

    Arguments override environment variables, which override defaults:
    ``mrenclave`` ($PPML_SIM_MRENCLAVE, default: hash of ppml_kernel's source),
    ``mrsigner`` ($PPML_SIM_MRSIGNER, default: derived from the simulated root),
    ``isv_prod_id`` ($PPML_SIM_ISVPRODID, 1), ``isv_svn`` ($PPML_SIM_ISVSVN, 1),
    ``debug`` ($PPML_SIM_DEBUG, False), ``tcb_status`` ($PPML_SIM_TCB_STATUS,
    "UpToDate"), ``pki_dir`` ($PPML_SIM_PKI_DIR, the Jupyter data dir).
    Measurements may be bytes or hex strings.
    """

    kind = "simulated"
    simulated = True
    description = WARNING

    def __init__(
        self,
        pki_dir: str | os.PathLike[str] | None = None,
        *,
        mrenclave: bytes | str | None = None,
        mrsigner: bytes | str | None = None,
        isv_prod_id: int | None = None,
        isv_svn: int | None = None,
        debug: bool | None = None,
        tcb_status: str | None = None,
    ) -> None:
        # Chosen now (argument, else $PPML_SIM_PKI_DIR); the Jupyter default is looked up
        # on first use so that construction stays import- and disk-free.
        self._pki_dir_arg = (
            Path(pki_dir).expanduser().absolute() if pki_dir is not None else env_pki_dir()
        )
        self._mrenclave = _measurement(mrenclave, ENV_MRENCLAVE, "mrenclave")
        self._mrenclave_source = (
            "argument" if mrenclave is not None else ENV_MRENCLAVE if self._mrenclave else None
        )
        self._mrsigner = _measurement(mrsigner, ENV_MRSIGNER, "mrsigner")
        self._mrsigner_source = (
            "argument" if mrsigner is not None else ENV_MRSIGNER if self._mrsigner else None
        )
        self.isv_prod_id = _u16(isv_prod_id, ENV_ISVPRODID, "isv_prod_id", DEFAULT_ISV_PROD_ID)
        self.isv_svn = _u16(isv_svn, ENV_ISVSVN, "isv_svn", DEFAULT_ISV_SVN)
        self.debug = _debug(debug)
        self.tcb_status = _tcb_status(tcb_status)
        self._pki: SimulatedPKI | None = None
        self._lock = threading.Lock()

    @classmethod
    def available(cls) -> bool:
        return True

    @property
    def pki_dir(self) -> Path:
        """Where the simulated PKI lives (argument, else ``$PPML_SIM_PKI_DIR``, else default)."""
        if self._pki_dir_arg is not None:
            return self._pki_dir_arg
        from ppml_kernel.tee.simulated.paths import default_pki_dir

        return default_pki_dir()

    @property
    def pki(self) -> SimulatedPKI:
        """The simulated PKI, loaded (or generated) on first use, reloaded after a reset."""
        from ppml_kernel.tee.simulated.pki import SimulatedPKI, SimulatedPKIError

        with self._lock:
            if self._pki is None or not self._pki.is_current():
                try:
                    self._pki = SimulatedPKI.load_or_create(self.pki_dir)
                except SimulatedPKIError:
                    raise
                except OSError as exc:
                    raise SimulatedPKIError(
                        f"simulated enclave cannot use its PKI at {self.pki_dir}: {exc}"
                    ) from None
            return self._pki

    @property
    def mrenclave(self) -> bytes:
        if self._mrenclave is None:
            from ppml_kernel.tee.simulated.measurement import package_measurement

            return package_measurement()
        return self._mrenclave

    @property
    def mrsigner(self) -> bytes:
        return self._mrsigner if self._mrsigner is not None else self.pki.default_mrsigner

    def quote(self, report_data: bytes) -> bytes:
        """A fresh SIMULATED SGX v3 quote binding ``report_data`` (64 bytes)."""
        data = check_report_data(report_data)
        from ppml_kernel.tee.simulated.quote import build_quote

        pki = self.pki
        return build_quote(
            pki,
            data,
            mrenclave=self.mrenclave,
            mrsigner=self._mrsigner if self._mrsigner is not None else pki.default_mrsigner,
            isv_prod_id=self.isv_prod_id,
            isv_svn=self.isv_svn,
            debug=self.debug,
            tcb_status=self.tcb_status,
        )

    def collateral(self) -> str:
        """Collateral JSON signed by the simulated PKI, valid now for 30 days (cached)."""
        from ppml_kernel.tee.simulated.collateral import collateral_json

        return collateral_json(self.pki)

    def describe(self) -> dict[str, object]:
        """Measurements, PKI location and root fingerprint (loads or creates the PKI)."""
        pki = self.pki
        facts = super().describe()
        facts.update(
            {
                "warning": WARNING,
                "mrenclave": self.mrenclave.hex(),
                "mrenclave_source": self._mrenclave_source or "ppml_kernel package source",
                "mrsigner": self.mrsigner.hex(),
                "mrsigner_source": self._mrsigner_source or "simulated root key",
                "isv_prod_id": self.isv_prod_id,
                "isv_svn": self.isv_svn,
                "debug": self.debug,
                "tcb_status": self.tcb_status,
                "pki_dir": str(pki.directory),
                "root_fingerprint": pki.root_fingerprint,
                "root_subject": pki.root_certificate.subject.rfc4514_string(),
            }
        )
        return facts
