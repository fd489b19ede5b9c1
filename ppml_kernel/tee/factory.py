"""Choose an attester: explicit kind, then ``$PPML_TEE``, then detection.

Backends are registered as entry points in the ``ppml_kernel.attesters`` group
(like jupyter_client's kernel provisioners), so a deployment can add a TEE kind
from its own package. The built-in table below is the fallback when the package
runs from a source tree without installed metadata.
"""

from __future__ import annotations

import os
from importlib import import_module
from importlib.metadata import entry_points

from ppml_kernel.tee.base import Attester, AttesterError

ENV_VAR = "PPML_TEE"
ENTRY_POINT_GROUP = "ppml_kernel.attesters"
AUTO = "auto"

_BUILTIN: dict[str, str] = {
    "simulated": "ppml_kernel.tee.simulated:SimulatedAttester",
    "occlum": "ppml_kernel.tee.occlum:OcclumAttester",
    "gramine": "ppml_kernel.tee.gramine:GramineAttester",
    "tdx": "ppml_kernel.tee.tsm:TsmAttester",
}

# Hardware first, most specific first: inside Gramine or Occlum the configfs-tsm
# path cannot exist, and a TDX guest has neither /dev/attestation nor Occlum's /dev/sgx.
DETECTION_ORDER: tuple[str, ...] = ("gramine", "occlum", "tdx")


def _registered() -> dict[str, str]:
    found = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def attester_kinds() -> list[str]:
    """Every kind that can be asked for, built-in or from entry points."""
    return sorted(_registered())


def attester_class(kind: str) -> type[Attester]:
    """Import the attester class registered under ``kind``."""
    target = _registered().get(kind)
    if target is None:
        choices = ", ".join([*attester_kinds(), AUTO])
        raise AttesterError(f"unknown TEE kind {kind!r} (choose one of: {choices})")
    module_name, _, attr = target.partition(":")
    cls = getattr(import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Attester)):
        raise AttesterError(f"{target} registered for {kind!r} is not an Attester")
    return cls


def detect_kind() -> str:
    """The first hardware backend that looks available, else ``simulated``."""
    for kind in DETECTION_ORDER:
        if attester_class(kind).available():
            return kind
    return "simulated"


def requested_kind(kind: str | None = None) -> str:
    """Resolve an explicit choice, ``$PPML_TEE`` or ``auto`` to a concrete kind."""
    choice = (kind or os.environ.get(ENV_VAR) or AUTO).strip().lower()
    return detect_kind() if choice == AUTO else choice


def get_attester(kind: str | None = None) -> Attester:
    """Build the attester for ``kind`` (or ``$PPML_TEE``, or detection)."""
    return attester_class(requested_kind(kind))()
