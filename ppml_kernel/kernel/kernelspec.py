"""Write the kernelspec that makes Jupyter start ``python -m ppml_kernel``.

The TEE kind is recorded twice on purpose: ``env.PPML_TEE`` is what the kernel
reads, ``metadata.ppml.tee`` is what frontends and tools can read without
starting the kernel.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

from ppml_kernel.kernel.errors import KernelSpecError

DEFAULT_NAME = "ppml"
TEE_CHOICES = ("simulated", "occlum", "gramine", "tdx", "auto")
DISPLAY_NAMES = {
    "simulated": "Python 3 (PPML, simulated enclave)",
    "occlum": "Python 3 (PPML, Occlum SGX enclave)",
    "gramine": "Python 3 (PPML, Gramine SGX enclave)",
    "tdx": "Python 3 (PPML, TDX confidential VM)",
    "auto": "Python 3 (PPML)",
}


def kernelspec_dict(tee: str, display_name: str | None = None, python: str | None = None) -> dict:
    """The kernel.json content for a locally launched PPML kernel."""
    if tee not in TEE_CHOICES:
        raise KernelSpecError(f"unknown TEE kind {tee!r}; choose one of {', '.join(TEE_CHOICES)}")
    return {
        "argv": [python or sys.executable, "-m", "ppml_kernel", "-f", "{connection_file}"],
        "display_name": display_name or DISPLAY_NAMES[tee],
        "language": "python",
        "interrupt_mode": "signal",
        "env": {"PPML_TEE": tee},
        "metadata": {
            "ppml": {"tee": tee, "simulated": tee == "simulated"},
            "debugger": False,
            # Lets jupyter_client (transport_encryption=auto) encrypt the ZMQ wire with
            # CurveZMQ: defence in depth only; the host still sees both ends.
            "supported_encryption": ["curve"],
        },
    }


def install(
    spec: dict,
    name: str = DEFAULT_NAME,
    *,
    user: bool = False,
    prefix: str | None = None,
) -> str:
    """Install ``spec`` as kernelspec ``name``; returns the directory written."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
        return KernelSpecManager().install_kernel_spec(
            tmp, kernel_name=name, user=user, prefix=prefix
        )
