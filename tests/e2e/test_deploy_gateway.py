"""Trusted-frontend deployment, locally: the user's own Jupyter server talks to a kernel
gateway (images/jupyterhub/gateway/) that starts the kernel with the ``occlum``
provisioner; a cell runs through both.

Real parts: jupyter_kernel_gateway, jupyter_server's gateway client, the provisioner,
the kernel. Stand-in: ``occlum`` (tests/support/fake_occlum.py runs the kernel outside
any enclave). Also checks the deployment files: the Helm values' KubeSpawner overrides
are real KubeSpawner traits and the EPC they request covers the default build.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import secrets
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from support.jupyter_ws import run_cell
from support.servers import free_ports, start_server, stop_server, wait_http

from ppml_kernel.occlum.config import OcclumConfig
from ppml_kernel.occlum.kernelspec import occlum_kernelspec
from ppml_kernel.occlum.sizes import GiB
from ppml_kernel.occlum.sizing import plan

pytestmark = pytest.mark.hub

ROOT = Path(__file__).resolve().parents[2]
STAND_IN = ROOT / "tests" / "support" / "fake_occlum.py"
VALUES = ROOT / "images" / "jupyterhub" / "values.yaml"
GATEWAY = ROOT / "images" / "jupyterhub" / "gateway" / "kernel-gateway.yaml"


def need(module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: `pip install {install}`")


def k8s_quantity(text: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


# -- deployment files ----------------------------------------------------------------


def test_helm_values_use_real_kubespawner_traits() -> None:
    need("kubespawner", "jupyterhub-kubespawner")
    from kubespawner import KubeSpawner

    traits = set(KubeSpawner.class_trait_names())
    values = yaml.safe_load(VALUES.read_text())
    profiles = values["singleuser"]["profileList"]
    assert [p.get("default", False) for p in profiles] == [True, False]
    for profile in profiles:
        unknown = set(profile["kubespawner_override"]) - traits
        assert not unknown, f"{profile['slug']}: not KubeSpawner traits: {unknown}"
    sgx = profiles[0]["kubespawner_override"]
    assert sgx["extra_annotations"] == {"sgx.intel.com/quote-provider": "aesmd"}
    assert "--MappingKernelManager.default_kernel_name=ppml-occlum" in sgx["args"]
    # The EPC request covers one kernel of the default build (user space + LibOS heap).
    default = plan()
    need_bytes = default.enclave_user_memory + default.kernel_space_heap_size
    assert k8s_quantity(sgx["extra_resource_limits"]["sgx.intel.com/epc"]) >= need_bytes
    assert values["hub"]["config"]["JupyterHub"]["authenticator_class"] != "dummy"


def test_gateway_manifest_matches_the_gateway_and_the_build() -> None:
    need("kernel_gateway", "jupyter_kernel_gateway")
    import kernel_gateway

    docs = list(yaml.safe_load_all(GATEWAY.read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["KG_DEFAULT_KERNEL_NAME"]["value"] == "ppml-occlum"
    assert "secretKeyRef" in env["KG_AUTH_TOKEN"]["valueFrom"]  # never a literal token
    package = Path(kernel_gateway.__file__).parent
    source = "".join(p.read_text() for p in package.rglob("*.py"))
    for name in env:
        assert f'"{name}"' in source, f"{name} is not read by jupyter_kernel_gateway"
    epc = k8s_quantity(container["resources"]["limits"]["sgx.intel.com/epc"])
    one = plan().enclave_user_memory + plan().kernel_space_heap_size
    assert epc >= int(env["KG_MAX_KERNELS"]["value"]) * one
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


# -- the trusted-frontend path, run locally ----------------------------------------------


@pytest.fixture
def gateway_and_lab(tmp_path: Path) -> Iterator[dict[str, object]]:
    need("kernel_gateway", "jupyter_kernel_gateway")
    # A built-looking Occlum instance and the occlum kernelspec, as the image has them.
    instance = tmp_path / "instance"
    (instance / "build").mkdir(parents=True)
    (instance / "run" / "mount" / "__ROOT").mkdir(parents=True)
    (instance / "Occlum.json").write_text(OcclumConfig().render())
    (instance / ".__occlum_status").write_text("built\n")
    occlum = tmp_path / "bin" / "occlum"
    occlum.parent.mkdir()
    occlum.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STAND_IN}" "$@"\n')
    occlum.chmod(occlum.stat().st_mode | stat.S_IXUSR)
    spec = occlum_kernelspec(instance, name="ppml-occlum")
    spec["metadata"]["kernel_provisioner"]["config"].update(  # type: ignore[index]
        {"occlum_command": [str(occlum)], "runtime_root": str(tmp_path / "runtime")}
    )
    share = tmp_path / "gateway-share"
    (share / "kernels" / "ppml-occlum").mkdir(parents=True)
    (share / "kernels" / "ppml-occlum" / "kernel.json").write_text(json.dumps(spec))

    gw_token, lab_token = secrets.token_hex(16), secrets.token_hex(16)
    gw_port, lab_port = free_ports(2)
    base_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
    }
    gw_env = {
        **base_env,
        "JUPYTER_PATH": str(share),
        "KG_AUTH_TOKEN": gw_token,
        "KG_IP": "127.0.0.1",
        "KG_PORT": str(gw_port),
        "KG_DEFAULT_KERNEL_NAME": "ppml-occlum",
        "KG_LIST_KERNELS": "True",
        "KG_FORCE_KERNEL_NAME": "ppml-occlum",
        "FAKE_OCCLUM_LOG": str(tmp_path / "occlum-runs.jsonl"),
        "FAKE_OCCLUM_OUTSIDE_ENV": "PYTHONPATH",
        # The gateway gives kernels only PATH and the variables listed here.
        "KG_ENV_PROCESS_WHITELIST": "FAKE_OCCLUM_LOG,FAKE_OCCLUM_OUTSIDE_ENV,PYTHONPATH",
    }
    # The gateway's command line, as in the Kubernetes manifest.
    args = yaml.safe_load_all(GATEWAY.read_text())
    deployment = next(d for d in args if d["kind"] == "Deployment")
    gw_args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    gateway = start_server(
        [sys.executable, "-m", "kernel_gateway", *gw_args], gw_env, tmp_path / "gateway.log"
    )
    lab = None
    try:
        wait_http(
            f"http://127.0.0.1:{gw_port}/api/kernelspecs",
            gateway,
            tmp_path / "gateway.log",
            {"Authorization": f"token {gw_token}"},
        )
        # The user's own server: no kernels of its own, everything through the gateway.
        # Tokens through the environment, as docs/deploy.md says (not on a command line).
        lab_env = {**base_env, "JUPYTER_TOKEN": lab_token, "JUPYTER_GATEWAY_AUTH_TOKEN": gw_token}
        lab_args = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={lab_port}",
            f"--gateway-url=http://127.0.0.1:{gw_port}",
            "--GatewayClient.request_timeout=120",
        ]
        if os.geteuid() == 0:
            lab_args.append("--ServerApp.allow_root=True")
        lab = start_server(lab_args, lab_env, tmp_path / "lab.log")
        wait_http(
            f"http://127.0.0.1:{lab_port}/api/status",
            lab,
            tmp_path / "lab.log",
            {"Authorization": f"token {lab_token}"},
        )
        yield {
            "lab": f"http://127.0.0.1:{lab_port}",
            "lab_token": lab_token,
            "runs": tmp_path / "occlum-runs.jsonl",
            "runtime": tmp_path / "runtime",
        }
    finally:
        if lab is not None:
            stop_server(lab)
        stop_server(gateway)


def test_cell_runs_through_a_kernel_gateway(gateway_and_lab: dict[str, object]) -> None:
    lab = str(gateway_and_lab["lab"])
    auth = {"Authorization": f"token {gateway_and_lab['lab_token']}"}
    specs = requests.get(f"{lab}/api/kernelspecs", headers=auth, timeout=60).json()
    assert set(specs["kernelspecs"]) == {"ppml-occlum"}  # no plain python3 outside SGX
    # jupyter_server reads its default before fetching the gateway's, then adopts it.
    specs = requests.get(f"{lab}/api/kernelspecs", headers=auth, timeout=60).json()
    assert specs["default"] == "ppml-occlum"

    kernel = requests.post(f"{lab}/api/kernels", headers=auth, json={}, timeout=120).json()
    assert kernel["name"] == "ppml-occlum"
    ws = f"{lab.replace('http', 'ws', 1)}/api/kernels/{kernel['id']}/channels"
    out = asyncio.run(
        run_cell(ws, auth, "k = get_ipython().kernel; print(6 * 7, k.implementation, k.tee_kind)")
    )
    assert out.split() == ["42", "ppml", "simulated"]  # the PPML kernel answered

    runs = [json.loads(x) for x in Path(str(gateway_and_lab["runs"])).read_text().splitlines()]
    assert len(runs) == 1
    assert runs[0]["argv"][:3] == ["run", "/bin/ppml-kernel-enclave", "-f"]
    assert Path(runs[0]["cwd"]).parent == gateway_and_lab["runtime"]

    assert (
        requests.delete(f"{lab}/api/kernels/{kernel['id']}", headers=auth, timeout=120).status_code
        == 204
    )
    assert not Path(runs[0]["cwd"]).exists()  # the gateway's provisioner cleaned up


def test_epc_budget_of_the_default_build() -> None:
    # docs/deploy.md quotes these numbers; keep them honest.
    default = plan()
    assert default.enclave_user_memory == 5888 * 1024**2
    assert default.enclave_user_memory + default.kernel_space_heap_size <= 7 * GiB
