"""An idle PPML kernel has not loaded the channel's cryptography; the first handshake does.

Real kernels through jupyter_client; the browser is the reference client, routed the
way the extension routes it (see tests/channel/test_channel_kernel.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.kernel_client import execute
from support.sealed import owner_session, start_kernel, stop_kernel

from ppml_kernel.channel import crypto
from ppml_kernel.channel.sealed_client import SealedClientError, SealedKernelClient

pytestmark = pytest.mark.kernel
ROOT = Path(__file__).resolve().parents[2]

# What kernel start used to import eagerly, and what must stay out of an idle kernel.
HEAVY = (
    "cryptography.hazmat.primitives.ciphers.aead",
    "cryptography.hazmat.primitives.asymmetric.ec",
    "ppml_kernel.channel.crypto",
    "ppml_kernel.channel.session",
    "ppml_kernel.channel.envelope",
    "ppml_kernel.attestation.verifier",
    "ppml_kernel.tee.simulated",
    "dcap_qvl",
    "pyspark",
)
PROBE = f"import sys, json\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"


def loaded(client) -> dict[str, bool]:
    """Which of HEAVY the kernel has imported (the probe prints one JSON line)."""
    run = execute(client, PROBE)
    assert run.status == "ok", run.text()
    lines = [line for line in run.text().splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


@pytest.fixture
def kernel(tmp_path: Path):
    km, kc = start_kernel(tmp_path)
    yield km, kc
    stop_kernel(km, kc)


def test_idle_kernel_has_not_imported_the_channel_crypto(kernel) -> None:
    _, kc = kernel
    assert loaded(kc) == dict.fromkeys(HEAVY, False)
    # Foreign comms on the control channel do not load it either.
    for msg_type, content in (
        ("comm_open", {"comm_id": "w", "target_name": "jupyter.widget", "data": {}}),
        ("comm_msg", {"comm_id": "not-a-session", "data": {"type": "sealed"}}),
    ):
        kc.control_channel.send(kc.session.msg(msg_type, content))
    assert not loaded(kc)["ppml_kernel.channel.crypto"]


def test_first_handshake_loads_it_and_the_channel_works(kernel) -> None:
    _, kc = kernel
    owner_key = crypto.generate_owner_key()
    owner = owner_session(kc, owner_key)  # verified with attestation.Verifier, bound, ready
    assert owner.evidence["tee"]["simulated"] is True
    now = loaded(owner)
    assert now["ppml_kernel.channel.session"] and now["cryptography.hazmat.primitives.ciphers.aead"]
    assert now["ppml_kernel.channel.envelope"]  # the sealed request itself needed it
    assert not now["pyspark"]
    assert owner.send_secret("k", "v-42")["ok"] is True
    assert (
        "['k'] 4"
        in execute(
            owner, "import ppml_kernel.secrets as s\nprint(s.names(), len(s.get('k')))"
        ).text()
    )
    # A second tab of the same owner reuses the loaded machinery.
    assert owner_session(kc, owner_key).ready["type"] == "ready"


def test_a_broken_crypto_import_is_reported_cleanly(tmp_path: Path) -> None:
    """If the lazy import fails, the browser gets one clear error and the kernel lives on."""
    fake = tmp_path / "fake"
    (fake / "cryptography").mkdir(parents=True)
    (fake / "cryptography" / "__init__.py").write_text(
        "raise ImportError('cryptography is deliberately broken in this test')\n"
    )
    path = os.pathsep.join([str(fake), str(ROOT), os.environ.get("PYTHONPATH", "")])
    km, kc = start_kernel(tmp_path / "kernels", env={"PYTHONPATH": path})
    try:
        client = SealedKernelClient(kc, allow_simulated=True)
        with pytest.raises(SealedClientError) as refused:
            client.attest()
        error = client.evidence or {}
        message = str(refused.value)
        assert "cannot load its channel crypto" in message, (message, error)
        assert "deliberately broken" in message and "Traceback" not in message
        run = execute(kc, "%ppml secret db_password")
        assert run.status == "ok"
        assert "no browser has verified this kernel's enclave" in run.text()
        assert "Traceback" not in run.text()
    finally:
        stop_kernel(km, kc)
