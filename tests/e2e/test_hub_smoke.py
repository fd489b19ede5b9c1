"""Local JupyterHub smoke test: log in through the hub's API, start a single-user server
whose default kernel is the PPML kernel, run a cell through the hub's proxy.

Real parts: jupyterhub (PyPI) with configurable-http-proxy (npm), the local
SimpleLocalProcessSpawner (no system users), jupyterhub-singleuser, the kernel.
The kernel here is the PPML kernel with the *simulated* TEE, as on a laptop or a
teaching hub; the SGX profile (images/jupyterhub/values.yaml) differs only in its
kernelspec, which tests/occlum/test_occlum_provisioner.py covers.

Needs (fails, never skips, without them): ``pip install jupyterhub`` and
``npm install --prefix .tools configurable-http-proxy`` (or the proxy on PATH).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.jupyter_ws import run_cell
from support.servers import free_ports, start_server, stop_server, wait_http

from ppml_kernel.kernel.kernelspec import install, kernelspec_dict

pytestmark = pytest.mark.hub

ROOT = Path(__file__).resolve().parents[2]
USER = "alice"


def proxy_command() -> str:
    found = shutil.which("configurable-http-proxy")
    local = ROOT / ".tools" / "node_modules" / ".bin" / "configurable-http-proxy"
    if found:
        return found
    if local.exists():
        return str(local)
    pytest.fail(
        "configurable-http-proxy not found: `npm install --prefix .tools "
        "configurable-http-proxy` (or put it on PATH)"
    )


def write_kernelspec(share: Path) -> None:
    """The simulated PPML kernelspec, as `ppml-kernel install --prefix` writes it."""
    install(kernelspec_dict("simulated"), "ppml", prefix=str(share.parent.parent))


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[dict[str, object]]:
    if importlib.util.find_spec("jupyterhub") is None:
        pytest.fail("jupyterhub is not installed: `pip install jupyterhub`")
    chp = proxy_command()
    share = tmp_path / "share" / "jupyter"
    write_kernelspec(share)
    password = secrets.token_urlsafe(16)
    proxy_port, hub_port, api_port = free_ports(3)
    server_args = ["--MappingKernelManager.default_kernel_name=ppml"]
    if os.geteuid() == 0:
        server_args.append("--ServerApp.allow_root=True")
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        "c = get_config()  # noqa\n"
        f"c.JupyterHub.bind_url = 'http://127.0.0.1:{proxy_port}'\n"
        f"c.JupyterHub.hub_bind_url = 'http://127.0.0.1:{hub_port}'\n"
        f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{api_port}'\n"
        f"c.ConfigurableHTTPProxy.command = [{chp!r}]\n"
        f"c.JupyterHub.db_url = 'sqlite:///{tmp_path / 'hub.sqlite'}'\n"
        f"c.JupyterHub.cookie_secret_file = {str(tmp_path / 'cookie_secret')!r}\n"
        f"c.JupyterHub.pid_file = {str(tmp_path / 'hub.pid')!r}\n"
        "c.JupyterHub.authenticator_class = 'shared-password'\n"
        f"c.Authenticator.allowed_users = {{{USER!r}}}\n"
        "c.JupyterHub.spawner_class = 'simple'\n"
        "c.SimpleLocalProcessSpawner.home_dir_template = "
        f"{str(tmp_path / 'home' / '{username}')!r}\n"
        f"c.Spawner.cmd = [{sys.executable!r}, '-m', 'jupyterhub.singleuser']\n"
        f"c.Spawner.args = {server_args!r}\n"
        "c.Spawner.default_url = '/lab'\n"
        "c.Spawner.start_timeout = 120\n"
        "c.Spawner.http_timeout = 120\n"
        f"c.Spawner.environment = {{'JUPYTER_PATH': {str(share)!r}, "
        f"'PYTHONPATH': {str(ROOT)!r}}}\n"
        # The password reaches the hub through its environment, not a file or argv.
        "import os\n"
        "c.SharedPasswordAuthenticator.user_password = "
        "os.environ['JUPYTERHUB_TEST_PASSWORD']\n"
    )
    env = {**os.environ, "JUPYTERHUB_TEST_PASSWORD": password}
    log = tmp_path / "hub.log"
    proc = start_server(
        [sys.executable, "-m", "jupyterhub", "-f", str(config)], env, log, cwd=tmp_path
    )
    base = f"http://127.0.0.1:{proxy_port}"
    try:
        wait_http(f"{base}/hub/api/", proc, log)
        yield {"base": base, "password": password, "log": log}
    finally:
        stop_server(proc)  # the hub stops its servers and its proxy


def test_cell_runs_in_the_ppml_kernel_through_the_hub(hub: dict[str, object]) -> None:
    base = str(hub["base"])
    # Log in through the hub's API: username + password in exchange for a token.
    r = requests.post(
        f"{base}/hub/api/users/{USER}/tokens",
        timeout=30,
        json={
            "auth": {"username": USER, "password": hub["password"]},
            "note": "smoke test",
            "expires_in": 900,
        },
    )
    assert r.status_code in (200, 201), r.text
    token = r.json()["token"]
    auth = {"Authorization": f"token {token}"}
    wrong = requests.post(
        f"{base}/hub/api/users/{USER}/tokens",
        timeout=30,
        json={"auth": {"username": USER, "password": "not-the-password"}},
    )
    assert wrong.status_code == 403

    # Start the single-user server and wait until the hub says it is ready.
    r = requests.post(f"{base}/hub/api/users/{USER}/server", headers=auth, timeout=30)
    assert r.status_code in (201, 202), r.text
    deadline = time.monotonic() + 120
    while True:
        model = requests.get(f"{base}/hub/api/users/{USER}", headers=auth, timeout=30).json()
        if model.get("servers", {}).get("", {}).get("ready"):
            break
        assert time.monotonic() < deadline, (
            "single-user server not ready:\n" + Path(str(hub["log"])).read_text()[-3000:]
        )
        time.sleep(0.5)

    server = f"{base}/user/{USER}"
    specs = requests.get(f"{server}/api/kernelspecs", headers=auth, timeout=30).json()
    assert specs["default"] == "ppml"
    spec = specs["kernelspecs"]["ppml"]["spec"]
    assert spec["metadata"]["ppml"] == {"tee": "simulated", "simulated": True}
    assert "simulated" in spec["display_name"].lower()

    kernel = requests.post(f"{server}/api/kernels", headers=auth, json={}, timeout=60).json()
    assert kernel["name"] == "ppml"  # the default kernel, not python3
    ws = f"{base.replace('http', 'ws', 1)}/user/{USER}/api/kernels/{kernel['id']}/channels"
    out = asyncio.run(
        run_cell(ws, auth, "k = get_ipython().kernel; print(6 * 7, k.implementation, k.tee_kind)")
    )
    assert out.split() == ["42", "ppml", "simulated"]  # the PPML kernel answered

    # Without the token the proxy route does not give access to the kernel.
    anonymous = requests.get(f"{server}/api/kernels", timeout=30, allow_redirects=False)
    assert anonymous.status_code in (302, 403)

    assert (
        requests.delete(
            f"{server}/api/kernels/{kernel['id']}", headers=auth, timeout=60
        ).status_code
        == 204
    )
    r = requests.delete(f"{base}/hub/api/users/{USER}/server", headers=auth, timeout=60)
    assert r.status_code in (202, 204)
