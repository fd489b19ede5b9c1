"""A real PPML kernel through jupyter_client, and sealed sessions to it (the owner's side).

``start_kernel`` launches ``python -m ppml_kernel`` on a simulated enclave with its own
PKI; ``owner_session`` attests it with the sealed headless client (the same code path
``ppml-kernel run`` uses) and returns a ready session. A second ``km.client()`` on the
same connection file is what a relay holds.
"""

from __future__ import annotations

import json
import queue
import sys
import time
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from ppml_kernel.channel.sealed_client import SealedKernelClient
from ppml_kernel.tee.simulated import SimulatedPKI


def start_kernel(spec_root: Path, env: dict[str, str] | None = None) -> tuple[Any, Any]:
    """The real PPML kernel (simulated enclave, its PKI in ``spec_root/pki``)."""
    spec_dir = spec_root / "ppml-sealed-test"
    spec_dir.mkdir(parents=True, exist_ok=True)
    pki_dir = spec_root / "pki"
    SimulatedPKI.load_or_create(pki_dir)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ppml_kernel", "-f", "{connection_file}"],
                "display_name": "PPML sealed test",
                "language": "python",
                "env": {"PPML_TEE": "simulated", "PPML_SIM_PKI_DIR": str(pki_dir), **(env or {})},
            }
        )
    )
    km = KernelManager(
        kernel_name="ppml-sealed-test",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_root)]),
    )
    km.start_kernel()
    km.pki_dir = pki_dir
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


def stop_kernel(km: Any, *clients: Any) -> None:
    for kc in clients:
        kc.stop_channels()
    km.shutdown_kernel(now=True)


def relay_client(km: Any) -> Any:
    """Another client on the same connection file, with a session of its own (as the
    Jupyter server has): two clients sharing one session id would share a ZMQ identity."""
    from jupyter_client.session import Session

    session = Session(key=km.session.key, signature_scheme=km.session.signature_scheme)
    kc = km.client(session=session)
    kc.start_channels()
    return kc


def owner_session(kc: Any, owner_key: Any, **kwargs: Any) -> SealedKernelClient:
    """A verified, sealed session of the owner holding ``owner_key``."""
    client = SealedKernelClient(kc, allow_simulated=True, owner_key=owner_key, **kwargs)
    client.attest()
    return client


def relay_reply(kc: Any, msg: dict[str, Any], channel: str = "shell", timeout: float = 30) -> dict:
    """Send ``msg`` as the relay does (no session) and return the kernel's reply to it."""
    getattr(kc, f"{channel}_channel").send(msg)
    msg_id = msg["header"]["msg_id"]
    deadline = time.monotonic() + timeout
    get = kc.get_control_msg if channel == "control" else kc.get_shell_msg
    while time.monotonic() < deadline:
        try:
            reply = get(timeout=0.5)
        except queue.Empty:
            continue
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply
    raise AssertionError(f"no reply to the relay's {msg['header']['msg_type']}")


def drain_iopub(kc: Any, seconds: float = 0.5) -> list[dict]:
    """Every IOPub message the relay's client receives within ``seconds``."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            out.append(kc.get_iopub_msg(timeout=0.1))
        except queue.Empty:
            continue
    return out
