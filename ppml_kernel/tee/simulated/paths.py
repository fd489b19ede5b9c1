"""Where the simulated PKI lives (kept apart so finding it imports no crypto)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_PKI_DIR = "PPML_SIM_PKI_DIR"


def env_pki_dir() -> Path | None:
    """``$PPML_SIM_PKI_DIR`` as an absolute path, or None when unset."""
    override = os.environ.get(ENV_PKI_DIR, "").strip()
    return Path(override).expanduser().absolute() if override else None


def default_pki_dir() -> Path:
    """``$PPML_SIM_PKI_DIR``, else ``<jupyter data dir>/ppml/simulated-pki``."""
    override = env_pki_dir()
    if override is not None:
        return override
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()).expanduser().absolute() / "ppml" / "simulated-pki"


def resolve_pki_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """``directory`` made absolute, or :func:`default_pki_dir` when None."""
    if directory is None:
        return default_pki_dir()
    return Path(directory).expanduser().absolute()


ROOT_CERT_FILE = "root-ca.pem"


def root_certificate_path(directory: str | os.PathLike[str] | None = None) -> Path:
    """Where the simulated root certificate (public, no key) is stored."""
    return resolve_pki_dir(directory) / ROOT_CERT_FILE
