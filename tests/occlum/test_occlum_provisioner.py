"""The ``occlum`` kernel provisioner through jupyter_client, with a stand-in ``occlum``.

The stand-in (tests/support/fake_occlum.py) runs the real PPML kernel OUTSIDE any
enclave (so with the simulated TEE) and reproduces what the provisioner depends on in
``occlum run``: instance checks, the one-enclave-per-instance rule, entry points, the
env.default/env.untrusted split, hostfs path translation and "no signal forwarding".
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from ppml_kernel.occlum.config import OcclumConfig
from ppml_kernel.occlum.kernelspec import occlum_kernelspec

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
STAND_IN = ROOT / "tests" / "support" / "fake_occlum.py"
TIMEOUT = 60


@pytest.fixture(scope="module", autouse=True)
def provisioner_registered() -> None:
    found = [
        ep for ep in entry_points(group="jupyter_client.kernel_provisioners") if ep.name == "occlum"
    ]
    if not found or found[0].value != "ppml_kernel.occlum.provisioner:OcclumProvisioner":
        pytest.fail(
            "entry point jupyter_client.kernel_provisioners:occlum -> "
            "ppml_kernel.occlum.provisioner:OcclumProvisioner is not installed "
            "(pip install -e . with it in pyproject.toml)"
        )


def make_instance(path: Path, *, built: bool = True) -> Path:
    """A directory shaped like a built Occlum instance (no enclave inside)."""
    path.mkdir(parents=True)
    (path / "Occlum.json").write_text(OcclumConfig().render())
    (path / "build" / "bin").mkdir(parents=True)
    (path / "initfs").mkdir()
    (path / ".sgx_mode").write_text("HW\n")
    if built:
        (path / ".__occlum_status").write_text("built\n")
        (path / "run" / "mount" / "__ROOT").mkdir(parents=True)
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    occlum = bin_dir / "occlum"
    occlum.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STAND_IN}" "$@"\n')
    occlum.chmod(occlum.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "occlum-runs.jsonl"
    monkeypatch.setenv("FAKE_OCCLUM_LOG", str(log))
    monkeypatch.setenv("FAKE_OCCLUM_OUTSIDE_ENV", "PYTHONPATH")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    # A host variable that must never reach the enclave (not in env.untrusted).
    monkeypatch.setenv("PYTHONSTARTUP", str(tmp_path / "host-controlled.py"))
    (tmp_path / "host-controlled.py").write_text("print('HOST CODE RAN')\n")
    return {
        "occlum": occlum,
        "log": log,
        "runtime": tmp_path / "runtime",
        "kernels": tmp_path / "kernels",
        "tmp": tmp_path,
    }


def install_spec(
    env: dict[str, Path], instance: Path, name: str = "ppml-occlum", **config: object
) -> KernelSpecManager:
    spec = occlum_kernelspec(instance, name=name)
    spec["metadata"]["kernel_provisioner"]["config"].update(  # type: ignore[index]
        {
            "occlum_command": [str(env["occlum"])],
            "runtime_root": str(env["runtime"]),
            "launch_timeout": 120.0,
            **config,
        }
    )
    spec_dir = env["kernels"] / name
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(env["kernels"])], ensure_native_kernel=False)


def runs(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def execute(km: KernelManager, code: str, timeout: float = TIMEOUT) -> tuple[dict, str]:
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=timeout)
        out: list[str] = []
        reply = kc.execute_interactive(
            code,
            timeout=timeout,
            output_hook=lambda m: (
                out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None
            ),
        )
        return reply["content"], "".join(out)
    finally:
        kc.stop_channels()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_kernelspec_points_at_the_provisioner(tmp_path: Path) -> None:
    instance = make_instance(tmp_path / "inst")
    spec = occlum_kernelspec(instance, name="ppml-occlum", display_name="PPML")
    assert spec["interrupt_mode"] == "message"
    assert spec["language"] == "python"
    meta = spec["metadata"]
    assert meta["kernel_provisioner"] == {  # type: ignore[index]
        "provisioner_name": "occlum",
        "config": {"instance_dir": str(instance.resolve())},
    }
    assert spec["display_name"] == "PPML"
    # `ppml-kernel install --tee occlum` passes display_name=None when not given.
    assert occlum_kernelspec(instance, "ppml-occlum", None)["display_name"] == (
        "Python 3 (PPML, Occlum SGX enclave)"
    )
    assert spec["metadata"]["ppml"]["simulated"] is False  # type: ignore[index]
    assert spec["argv"][:3] == ["occlum", "run", "/bin/ppml-kernel-enclave"]  # type: ignore[index]


def test_kernelspec_marks_debug_enclaves_and_refuses_foreign_instances(tmp_path: Path) -> None:
    debug = tmp_path / "debug"
    debug.mkdir()
    (debug / "Occlum.json").write_text(OcclumConfig(debuggable=True).render())
    assert "not confidential" in occlum_kernelspec(debug)["display_name"]  # type: ignore[operator]

    with pytest.raises(ValueError, match=r"no Occlum\.json"):
        occlum_kernelspec(tmp_path / "nothing")
    template = tmp_path / "template"
    template.mkdir()
    doc = json.loads(OcclumConfig().render())
    doc["mount"] = doc["mount"][:1]  # Occlum's own template has no connection mount
    (template / "Occlum.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="no hostfs mount at /ppml/conn"):
        occlum_kernelspec(template)
    with pytest.raises(ValueError, match="may contain only"):
        occlum_kernelspec(debug, name="bad name")


def test_start_interrupt_restart_shutdown(env: dict[str, Path]) -> None:
    instance = make_instance(env["tmp"] / "instance")
    ksm = install_spec(env, instance)
    km = KernelManager(kernel_name="ppml-occlum", kernel_spec_manager=ksm)
    km.start_kernel()
    try:
        # -- start: what was launched, from where, with which connection file
        content, out = execute(km, "import os; print(6 * 7, os.environ.get('PPML_TEE'))")
        assert content["status"] == "ok"
        assert out.split() == ["42", "simulated"]
        [first] = runs(env["log"])
        run_dir = Path(first["cwd"])
        assert run_dir.parent == env["runtime"]
        name = f"kernel-{km.kernel_id}.json"
        assert first["argv"] == ["run", "/bin/ppml-kernel-enclave", "-f", f"/ppml/conn/{name}"]
        assert (run_dir / "build").resolve() == (instance / "build").resolve()
        copy = run_dir / "ppml-conn" / name
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        assert (
            json.loads(copy.read_text())["key"]
            == json.loads(Path(km.connection_file).read_text())["key"]
        )
        assert "PYTHONSTARTUP" not in first["env"]  # host env does not leak in
        kc = km.client()
        kc.start_channels()
        try:
            info = kc.kernel_info(reply=True, timeout=TIMEOUT)["content"]
        finally:
            kc.stop_channels()
        assert info["implementation"] == "ppml"  # the PPML kernel, via the launcher
        assert info["ppml"]["tee"] == "simulated"  # outside an enclave: said so
        assert km.provisioner.get_stable_start_time(10) == 120.0

        # -- interrupt: over the control channel; the enclave keeps running
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=TIMEOUT)
            msg_id = kc.execute("import time; time.sleep(60)")
            time.sleep(1.0)
            km.interrupt_kernel()
            reply = kc.get_shell_msg(timeout=20)
            assert reply["parent_header"]["msg_id"] == msg_id
            assert reply["content"]["status"] == "error"
            assert reply["content"]["ename"] == "KeyboardInterrupt"
        finally:
            kc.stop_channels()
        # A raw SIGINT would end occlum-run and the enclave: the provisioner refuses it.
        km.signal_kernel(signal.SIGINT)
        time.sleep(0.5)
        assert km.is_alive()
        assert execute(km, "1 + 1")[0]["status"] == "ok"

        # -- restart: a fresh enclave (new process, fresh run dir), same connection
        km.restart_kernel(now=False)
        content, out = execute(km, "print('after restart')")
        assert out.strip() == "after restart"
        first_run, second_run = runs(env["log"])
        assert second_run["child"] != first_run["child"]
        assert wait_gone(first_run["child"])
        assert second_run["argv"] == first_run["argv"]
    finally:
        km.shutdown_kernel(now=False)

    # -- shutdown: processes gone, per-kernel directory and connection copy removed
    last = runs(env["log"])[-1]
    assert not km.is_alive()
    assert wait_gone(last["pid"]) and wait_gone(last["child"])
    assert not Path(last["cwd"]).exists()
    assert not (instance / "ppml-conn").exists()  # the shared instance was never written


def test_two_kernels_share_one_instance(env: dict[str, Path]) -> None:
    instance = make_instance(env["tmp"] / "instance")
    ksm = install_spec(env, instance)
    managers = [KernelManager(kernel_name="ppml-occlum", kernel_spec_manager=ksm) for _ in range(2)]
    try:
        for km in managers:
            km.start_kernel()
        outputs = [execute(km, "print('ok')")[1].strip() for km in managers]
        assert outputs == ["ok", "ok"]
        assert len({r["cwd"] for r in runs(env["log"])}) == 2
    finally:
        for km in managers:
            km.shutdown_kernel(now=True)


def test_without_isolation_occlum_refuses_a_second_kernel(env: dict[str, Path]) -> None:
    instance = make_instance(env["tmp"] / "instance")
    ksm = install_spec(env, instance, isolate_instances=False)
    first = KernelManager(kernel_name="ppml-occlum", kernel_spec_manager=ksm)
    second = KernelManager(kernel_name="ppml-occlum", kernel_spec_manager=ksm)
    first.start_kernel()
    try:
        assert execute(first, "1")[0]["status"] == "ok"
        assert runs(env["log"])[0]["cwd"] == str(instance.resolve())
        second.start_kernel()
        deadline = time.monotonic() + 20
        while second.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not second.is_alive()  # `occlum run` said the instance is running
    finally:
        first.shutdown_kernel(now=True)
        second.shutdown_kernel(now=True)


def test_unbuilt_instance_is_a_clear_error(env: dict[str, Path]) -> None:
    instance = make_instance(env["tmp"] / "instance", built=False)
    ksm = install_spec(env, instance)
    km = KernelManager(kernel_name="ppml-occlum", kernel_spec_manager=ksm)
    with pytest.raises(RuntimeError, match="is not built: run `occlum build`"):
        km.start_kernel()
    assert runs(env["log"]) == []


def test_missing_occlum_command_is_a_clear_error(env: dict[str, Path]) -> None:
    instance = make_instance(env["tmp"] / "instance")
    ksm = install_spec(env, instance, occlum_command=[str(env["tmp"] / "no-occlum")])
    km = KernelManager(kernel_name="ppml-occlum", kernel_spec_manager=ksm)
    with pytest.raises(RuntimeError, match="not found: install Occlum"):
        km.start_kernel()
