"""The ppml-kernel command: help everywhere, verify's exit codes, install, sim."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from conftest import VECTORS

SGX_QUOTE = VECTORS / "dcap-qvl/sgx_quote"
SGX_COLLATERAL = VECTORS / "dcap-qvl/sgx_quote_collateral.json"
SGX_AT = "1751624924"


def cli(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ppml_kernel.cli", *args],
        capture_output=True,
        text=True,
        input=input,
        env=os.environ.copy(),
        timeout=120,
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["install"],
        ["verify"],
        ["sim"],
        ["sim", "init"],
        ["sim", "show"],
        ["sim", "reset"],
        ["lab"],
    ],
)
def test_every_subcommand_has_help(command):
    out = cli(*command, "--help")
    assert out.returncode == 0 and "usage: ppml-kernel" in out.stdout


def test_verify_real_quote_exit_codes(tmp_path):
    fails_policy = cli(
        "verify", str(SGX_QUOTE), "--collateral", str(SGX_COLLATERAL), "--at", SGX_AT
    )
    assert fails_policy.returncode == 1
    assert "ConfigurationAndSWHardeningNeeded" in fails_policy.stdout
    assert "FAILED: policy: tcb_status" in fails_policy.stderr

    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"allowed_tcb_statuses": ["ConfigurationAndSWHardeningNeeded"]}))
    passes = cli(
        "verify",
        str(SGX_QUOTE),
        "--collateral",
        str(SGX_COLLATERAL),
        "--at",
        SGX_AT,
        "--policy",
        str(policy),
        "--json",
    )
    assert passes.returncode == 0, passes.stderr
    data = json.loads(passes.stdout)
    assert data["passed"] and data["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert data["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert data["quote"]["mrenclave"].startswith("33d8736d")

    expired = cli(
        "verify", str(SGX_QUOTE), "--collateral", str(SGX_COLLATERAL), "--policy", str(policy)
    )
    assert expired.returncode == 1, "collateral verified at 'now' has expired"


def test_verify_hex_quote_and_unusable_input(tmp_path):
    hex_quote = VECTORS / "automata-dcap-attestation/sgx_quotev3.hex"
    col = VECTORS / "automata-dcap-attestation/sgx_v3_00606a_collateral_2025-08.json"
    ok = cli("verify", str(hex_quote), "--collateral", str(col), "--at", "1756530546")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "SWHardeningNeeded" in ok.stdout

    missing = cli("verify", str(tmp_path / "nope.bin"))
    assert missing.returncode == 2 and "cannot read quote file" in missing.stderr
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x03\x00" + b"\x00" * 100)
    bad = cli("verify", str(garbage), "--collateral", str(SGX_COLLATERAL))
    assert bad.returncode == 2 and "cannot parse quote" in bad.stderr  # unusable input
    assert "Traceback" not in bad.stderr


def test_install_variants(tmp_path):
    out = cli(
        "install",
        "--prefix",
        str(tmp_path),
        "--name",
        "ppml-x",
        "--tee",
        "auto",
        "--display-name",
        "My PPML",
    )
    assert out.returncode == 0, out.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/ppml-x/kernel.json").read_text())
    assert spec["display_name"] == "My PPML" and spec["env"]["PPML_TEE"] == "auto"
    bad = cli("install", "--prefix", str(tmp_path), "--tee", "sev")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    wrong = cli("install", "--prefix", str(tmp_path), "--instance", str(tmp_path))
    assert wrong.returncode == 1 and "only meaningful with --tee occlum" in wrong.stderr


def test_sim_init_show_reset(tmp_path):
    d = tmp_path / "pki"
    missing = cli("sim", "show", "--dir", str(d))
    assert missing.returncode == 1 and "ppml-kernel sim init" in missing.stderr
    init = cli("sim", "init", "--dir", str(d), "--json")
    assert init.returncode == 0, init.stderr
    first = json.loads(init.stdout)
    assert "SIMULATED" in json.dumps(first)
    assert "PRIVATE KEY" not in init.stdout
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for key in d.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    shown = json.loads(cli("sim", "show", "--dir", str(d), "--json").stdout)
    assert shown == first
    text = cli("sim", "show", "--dir", str(d)).stdout  # for people: no Python reprs
    assert "NOT confidential" in text and "Certificates" in text
    assert "{'" not in text and "['" not in text and "True" not in text
    assert first["root_fingerprint"][:16] in text
    refused = cli("sim", "reset", "--dir", str(d), input="n\n")
    assert refused.returncode == 1
    assert json.loads(cli("sim", "show", "--dir", str(d), "--json").stdout) == first
    reset = cli("sim", "reset", "--dir", str(d), "--yes", "--json")
    assert reset.returncode == 0
    assert json.loads(reset.stdout) != first


def test_simulated_quote_verifies_only_when_allowed(tmp_path):
    d = tmp_path / "pki"
    code = (
        "import sys; from ppml_kernel.tee.simulated import SimulatedAttester; "
        f"a = SimulatedAttester({str(d)!r}); q = a.quote(bytes(64)); "
        f"open({str(tmp_path / 'q.bin')!r}, 'wb').write(q); "
        f"open({str(tmp_path / 'c.json')!r}, 'w').write(a.collateral())"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    args = [
        "verify",
        str(tmp_path / "q.bin"),
        "--collateral",
        str(tmp_path / "c.json"),
        "--sim-pki",
        str(d),
    ]
    refused = cli(*args)
    assert refused.returncode == 1 and "SIMULATED" in refused.stdout + refused.stderr
    allowed = cli(*args, "--allow-simulated")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "SIMULATED ENCLAVE - NOT CONFIDENTIAL" in allowed.stdout


def test_lab_starts_jupyterlab_with_ppml_kernel_and_notebooks(tmp_path):
    """The README's first command ends in `ppml-kernel lab`: it must serve the notebooks."""
    import re
    import signal
    import time
    import urllib.request
    from pathlib import Path

    from support.servers import free_port

    port = free_port()
    repo = Path(__file__).parents[2]
    log = tmp_path / "lab.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ppml_kernel.cli", "lab", "--no-browser", "--port", str(port)],
            cwd=repo,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            start_new_session=True,
        )
    try:
        token = None
        for _ in range(120):
            m = re.search(r"token=([0-9a-f]+)", log.read_text())
            if m:
                token = m.group(1)
                break
            time.sleep(0.5)
        assert token, log.read_text()[-2000:]
        base = f"http://127.0.0.1:{port}/api"

        def get(path: str):
            with urllib.request.urlopen(f"{base}/{path}?token={token}", timeout=10) as r:
                return json.loads(r.read())

        specs = get("kernelspecs")
        assert specs["default"] == "ppml"
        assert specs["kernelspecs"]["ppml"]["spec"]["display_name"] == (
            "Python 3 (PPML, simulated enclave)"
        )
        names = [item["name"] for item in get("contents")["content"]]
        assert "01-attestation.ipynb" in names
        # JupyterLab's "get notified about official Jupyter news?" pop-up is off
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/lab/api/settings/@jupyterlab/apputils-extension:"
            f"notification?token={token}", timeout=10) as r:
            defaults = json.loads(r.read())["schema"]["properties"]  # overrides set defaults
        assert defaults["fetchNews"]["default"] == "false"
        assert defaults["checkForUpdates"]["default"] is False
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
