"""A jupyter_client kernel provisioner that starts the kernel inside an Occlum enclave.

Chosen by kernel.json ``metadata.kernel_provisioner.provisioner_name = "occlum"`` (see
:func:`ppml_kernel.occlum.kernelspec.occlum_kernelspec`). It keeps LocalProvisioner's
process handling and changes what is launched:

* the command becomes ``occlum run /bin/ppml-kernel-enclave -f <conn>/kernel-<id>.json``
  with the instance directory as working directory (``occlum`` finds its instance
  there);
* the connection file is copied into the instance's hostfs connection directory, the
  one host path the enclave can see (read from the instance's Occlum.json, so it always
  matches what was built and measured);
* ``occlum run`` refuses to start a second enclave from the same instance directory, so
  by default each kernel runs from its own small directory that links the built,
  read-only ``build/`` (and ``initfs/``) and has a fresh private ``run/`` (the
  enclave's sealed writable layer);
* interrupts go over the control channel (``interrupt_mode = "message"``): occlum-run
  does not forward signals, and a SIGINT would end the enclave;
* start and shutdown get longer timeouts (EPC commit and teardown take time).

The Occlum parts are untested on SGX hardware; the provisioner is tested through
jupyter_client with a stand-in ``occlum`` executable (tests/support/fake_occlum.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from jupyter_core.paths import jupyter_runtime_dir
from traitlets import Bool, Float, List, Unicode, default

from ppml_kernel.occlum.config import ENTRY_POINT, OcclumConfigError, connection_mount_of

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# What a runnable instance needs (after Occlum's own `occlum package` list).
_SHARED = ("build", "initfs")
_COPIED = ("Occlum.json", ".__occlum_status", ".sgx_mode")


class OcclumProvisioner(LocalProvisioner):  # type: ignore[misc]
    """Launch the kernel with ``occlum run`` from a built Occlum instance."""

    instance_dir = Unicode(
        "", config=True, help="The built Occlum instance (holds Occlum.json, build/)."
    )
    occlum_command = List(
        Unicode(),
        default_value=["occlum"],
        config=True,
        help="The occlum command, e.g. ['/opt/occlum/build/bin/occlum'].",
    )
    entry_point = Unicode(ENTRY_POINT, config=True, help="Program run inside the enclave.")
    isolate_instances = Bool(
        True,
        config=True,
        help="Run each kernel from its own directory (shared build/, private run/), so "
        "several kernels can use one instance; False runs in the instance itself.",
    )
    runtime_root = Unicode(config=True, help="Where per-kernel instance directories go.")
    launch_timeout = Float(
        300.0, config=True, help="Seconds a (re)start may take: enclave creation is slow."
    )
    shutdown_timeout = Float(
        60.0, config=True, help="Seconds a shutdown may take: EPC teardown is slow."
    )

    _run_dir: Path | None = None
    _connection_copy: Path | None = None

    @default("runtime_root")
    def _default_runtime_root(self) -> str:
        return os.path.join(jupyter_runtime_dir(), "ppml-occlum")

    # -- launch ---------------------------------------------------------------------

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        instance = self._instance()
        target, source = self._connection_mount(instance)
        executable = shutil.which(self.occlum_command[0]) if self.occlum_command else None
        if executable is None:
            raise RuntimeError(
                f"{self.occlum_command[:1] or ['occlum']} not found: install Occlum or set "
                "OcclumProvisioner.occlum_command in the kernelspec's provisioner config"
            )
        if self.kernel_spec is not None and self.kernel_spec.interrupt_mode != "message":
            # A SIGINT would terminate occlum-run and the enclave with it.
            self.kernel_spec.interrupt_mode = "message"
        kwargs = await super().pre_launch(**kwargs)

        run_dir = self._make_run_dir(instance) if self.isolate_instances else instance
        self._run_dir = run_dir
        name = f"kernel-{_UNSAFE.sub('-', self.kernel_id or 'ppml')}.json"
        self._connection_copy = self._share_connection_file(run_dir, source, name)
        kwargs["cmd"] = [*self.occlum_command, "run", self.entry_point, "-f", f"{target}/{name}"]
        kwargs["cwd"] = str(run_dir)
        self.log.info("Starting kernel %s in Occlum from %s", self.kernel_id, run_dir)
        return kwargs

    def _instance(self) -> Path:
        if not self.instance_dir:
            raise RuntimeError(
                "the occlum provisioner needs instance_dir in the kernelspec's "
                "metadata.kernel_provisioner.config"
            )
        instance = Path(self.instance_dir).expanduser().resolve()
        if not (instance / "Occlum.json").is_file():
            raise RuntimeError(f"{instance} is not an Occlum instance (no Occlum.json)")
        if not (instance / ".__occlum_status").is_file() or not (instance / "build").is_dir():
            raise RuntimeError(
                f"{instance} is not built: run `occlum build` there (the image build does)"
            )
        return instance

    @staticmethod
    def _connection_mount(instance: Path) -> tuple[str, str]:
        path = instance / "Occlum.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot read {path}: {exc}") from None
        try:
            return connection_mount_of(doc)
        except OcclumConfigError as exc:
            raise RuntimeError(f"{path}: {exc}") from None

    def _make_run_dir(self, instance: Path) -> Path:
        """A private instance directory: shared read-only build, fresh sealed run/."""
        root = Path(self.runtime_root)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        run_dir = root / f"{instance.name}-{_UNSAFE.sub('-', self.kernel_id or 'kernel')}"
        if run_dir.exists():  # left over from a crash; it held no secrets in plaintext
            shutil.rmtree(run_dir)
        run_dir.mkdir(mode=0o700)
        for name in _SHARED:
            if (instance / name).exists():
                (run_dir / name).symlink_to(instance / name)
        for name in _COPIED:
            if (instance / name).exists():
                shutil.copy2(instance / name, run_dir / name)
        (run_dir / ".__occlum_status").write_text("built\n", encoding="utf-8")
        for layer in ("run/mount/__ROOT", "run/initfs/__ROOT"):
            (run_dir / layer).mkdir(parents=True)
        return run_dir

    def _share_connection_file(self, run_dir: Path, source: str, name: str) -> Path:
        parent = self.parent
        original = getattr(parent, "connection_file", None)
        if not original or not os.path.isfile(original):
            raise RuntimeError("no connection file was written for this kernel")
        shared = (run_dir / source).resolve() if not os.path.isabs(source) else Path(source)
        shared.mkdir(parents=True, exist_ok=True, mode=0o700)
        copy = shared / name
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out, open(original, "rb") as src:
            shutil.copyfileobj(src, out)
        return copy

    # -- lifecycle ------------------------------------------------------------------

    async def send_signal(self, signum: int) -> None:
        if signum == signal.SIGINT:
            self.log.warning(
                "Not sending SIGINT to occlum run (it would end the enclave); "
                "interrupts go over the control channel"
            )
            return
        await super().send_signal(signum)

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart=restart)
        if self._connection_copy is not None:
            self._connection_copy.unlink(missing_ok=True)
            self._connection_copy = None
        if self.isolate_instances and self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
        self._run_dir = None

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return max(recommended, self.launch_timeout)

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return max(recommended, self.shutdown_timeout)

    def resolve_path(self, path_str: str) -> str | None:
        # Paths the kernel reports are enclave paths; never map them onto the host.
        return None

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update({"run_dir": str(self._run_dir) if self._run_dir else None})
        return info

    async def load_provisioner_info(self, provisioner_info: dict) -> None:
        await super().load_provisioner_info(provisioner_info)
        run_dir = provisioner_info.get("run_dir")
        self._run_dir = Path(run_dir) if run_dir else None
