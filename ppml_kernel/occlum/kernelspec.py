"""kernel.json for a kernel that runs inside an Occlum enclave.

ipykernel's own ``install`` cannot add provisioner metadata, so ``ppml-kernel install
--tee occlum --instance DIR`` writes this dictionary instead. The provisioner (entry
point ``occlum`` in ``jupyter_client.kernel_provisioners``) replaces ``argv`` with the
``occlum run`` command; ``argv`` here documents what runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ppml_kernel.occlum.config import ENTRY_POINT, OcclumConfigError, connection_mount_of

PROVISIONER_NAME = "occlum"
DEFAULT_DISPLAY_NAME = "Python 3 (PPML, Occlum SGX enclave)"
_KERNEL_NAME = re.compile(r"^[A-Za-z0-9._-]+$")  # what jupyter_client accepts


def occlum_kernelspec(
    instance_dir: str | Path,
    name: str = "ppml-occlum",
    display_name: str | None = None,
) -> dict[str, object]:
    """The kernel.json content for the built Occlum instance at ``instance_dir``.

    Raises :class:`~ppml_kernel.occlum.config.OcclumConfigError` (a ``ValueError``) with
    a message for the user if the directory is not an Occlum instance made for this kernel.
    """
    if not _KERNEL_NAME.match(name):
        raise OcclumConfigError(
            f"kernel name {name!r} may contain only letters, digits, '.', '_', '-'"
        )
    instance = Path(instance_dir).expanduser().resolve()
    occlum_json = instance / "Occlum.json"
    if not occlum_json.is_file():
        raise OcclumConfigError(
            f"{instance} is not an Occlum instance (no Occlum.json): create it with "
            "`occlum new` and `ppml-kernel occlum config`, then `occlum build`"
        )
    try:
        doc = json.loads(occlum_json.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise OcclumConfigError(f"cannot read {occlum_json}: {exc}") from None
    target, _source = connection_mount_of(doc)
    if ENTRY_POINT not in (doc.get("entry_points") or []):
        raise OcclumConfigError(
            f"{occlum_json} does not allow {ENTRY_POINT} as entry point: generate it with "
            "`ppml-kernel occlum config`"
        )
    metadata = doc.get("metadata") or {}
    debuggable = bool(metadata.get("debuggable", True))
    display_name = display_name or DEFAULT_DISPLAY_NAME
    if debuggable:
        display_name = f"{display_name} [DEBUG enclave: not confidential]"
    return {
        "argv": ["occlum", "run", ENTRY_POINT, "-f", f"{target}/kernel-{{kernel_id}}.json"],
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "message",
        "env": {},
        "metadata": {
            "debugger": False,
            "kernel_provisioner": {
                "provisioner_name": PROVISIONER_NAME,
                "config": {"instance_dir": str(instance)},
            },
            "ppml": {
                "tee": "occlum",
                "simulated": False,
                "kernel_name": name,
                "debuggable": debuggable,
            },
            # CurveZMQ on the host side of the wire (defence in depth, as for the
            # local kernelspec); the provisioner hands the keys over with the
            # connection file.
            "supported_encryption": ["curve"],
        },
    }
