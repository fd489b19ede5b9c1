"""Occlum.json for the PPML kernel enclave, from typed settings.

Occlum.json decides what is measured into MRENCLAVE and what the host may still
influence, so it is generated rather than hand-edited:

* ``entry_points`` holds only the kernel launcher: Occlum lets the host choose the
  program and its arguments, and a Python interpreter as entry point would run any
  code the host passes with ``-c``.
* ``env.default`` is measured; ``env.untrusted`` names variables the host may set, and
  Occlum lets them *override* the measured defaults, so the list is empty by default
  and names that change what runs (``PYTHON*``, ``LD_*``, ``JAVA*``, ...) are refused.
* ``mount`` has the encrypted root and one hostfs directory for connection files
  (plus explicitly requested ciphertext directories); Occlum's template also mounts
  the whole instance directory at ``/host``, which is left out.
* ``metadata.debuggable`` is false unless asked for: verifiers reject debug enclaves.

The field names and required keys follow Occlum's ``tools/gen_internal_conf``
(``OcclumConfiguration``), which is what ``occlum build`` parses.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from ppml_kernel.occlum.errors import OcclumError
from ppml_kernel.occlum.sizing import ResourcePlan, plan

ENTRY_POINT = "/bin/ppml-kernel-enclave"
CONNECTION_MOUNT = "/ppml/conn"
CONNECTION_SOURCE = "./ppml-conn"
PYTHON_HOME = "/opt/python-occlum"
PYTHON_VERSION = "3.11"
JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"
SPARK_CONF_DIR = "/etc/ppml/spark"
MAX_SGX_U16 = 0xFFFF  # ISVPRODID and ISVSVN are 16-bit fields of SIGSTRUCT

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Untrusted variables override measured ones in Occlum, so anything that changes which
# code runs or where it comes from stays out of the host's hands.
DENIED_UNTRUSTED_PREFIXES = (
    "PYTHON",
    "PYSPARK",
    "SPARK",
    "JAVA",
    "_JAVA",
    "JDK_",
    "LD_",
    "GLIBC_",
    "MALLOC_",
    "PPML",
    "OCCLUM",
    "JUPYTER",
    "JPY_",
    "IPYTHON",
    "HADOOP",
    "YARN",
    "SSL_",
    "REQUESTS_",
    "CURL_",
    "KRB5",
)
DENIED_UNTRUSTED_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "SHELL",
        "ENV",
        "BASH_ENV",
        "IFS",
        "CLASSPATH",
        "LANG",
        "LC_ALL",
        "TZDIR",
    }
)


class OcclumConfigError(OcclumError, ValueError):
    """A setting that would produce a broken or unsafe Occlum.json."""


@dataclass(frozen=True)
class HostMount:
    """A hostfs mount: ``target`` inside the enclave, ``source`` on the host."""

    target: str
    source: str

    @classmethod
    def parse(cls, text: str) -> HostMount:
        """``TARGET=SOURCE`` as given on the command line."""
        target, sep, source = text.partition("=")
        if not sep or not target or not source:
            raise OcclumConfigError(f"hostfs mount must be TARGET=SOURCE, got {text!r}")
        return cls(target, source)

    def to_json(self) -> dict[str, str]:
        return {"target": self.target, "type": "hostfs", "source": self.source}


def default_env(
    *,
    python_home: str = PYTHON_HOME,
    python_version: str = PYTHON_VERSION,
    java_home: str = JAVA_HOME,
    connection_mount: str = CONNECTION_MOUNT,
) -> tuple[str, ...]:
    """The measured environment of the kernel process inside the enclave."""
    python = f"{python_home}/bin/python3"
    spark_home = f"{python_home}/lib/python{python_version}/site-packages/pyspark"
    return (
        "PPML_TEE=occlum",
        f"PPML_CONNECTION_DIR={connection_mount}",
        f"PYTHONHOME={python_home}",
        "PYTHONDONTWRITEBYTECODE=1",
        f"PATH={python_home}/bin:{java_home}/bin:/bin:/usr/bin",
        "HOME=/root",
        "LANG=C.UTF-8",
        "MALLOC_ARENA_MAX=1",
        f"JAVA_HOME={java_home}",
        f"LD_LIBRARY_PATH={java_home}/lib/server:{java_home}/lib",
        f"SPARK_HOME={spark_home}",
        f"SPARK_CONF_DIR={SPARK_CONF_DIR}",
        f"PYSPARK_PYTHON={python}",
        f"PYSPARK_DRIVER_PYTHON={python}",
    )


@dataclass(frozen=True)
class OcclumConfig:
    """Everything ``ppml-kernel occlum config`` puts into Occlum.json."""

    resources: ResourcePlan = field(default_factory=plan)
    product_id: int = 0
    version_number: int = 0
    debuggable: bool = False
    env_default: tuple[str, ...] = field(default_factory=default_env)
    env_untrusted: tuple[str, ...] = ()
    connection_mount: str = CONNECTION_MOUNT
    connection_source: str = CONNECTION_SOURCE
    extra_hostfs: tuple[HostMount, ...] = ()
    entry_points: tuple[str, ...] = (ENTRY_POINT,)
    enable_edmm: bool = False
    enable_posix_shm: bool = False
    amx: int = 0
    pkru: int = 0
    io_uring: int = 0
    disable_log: bool | None = None

    def validate(self) -> None:
        """Raise :class:`OcclumConfigError` naming the first bad field."""
        for name, value in (
            ("product id", self.product_id),
            ("version number", self.version_number),
        ):
            if not 0 <= value <= MAX_SGX_U16:
                raise OcclumConfigError(f"{name} must be 0..65535 (SGX 16-bit field), got {value}")
        for name, value, top in (
            ("amx", self.amx, 2),
            ("pkru", self.pkru, 2),
            ("io_uring", self.io_uring, 16),
        ):
            if not 0 <= value <= top:
                raise OcclumConfigError(f"feature.{name} must be 0..{top}, got {value}")
        if not self.entry_points:
            raise OcclumConfigError("at least one entry point is required")
        for path in self.entry_points:
            _check_enclave_path(path, "entry point")
        defaults = _check_env_default(self.env_default)
        _check_env_untrusted(self.env_untrusted, defaults)
        self._check_mounts()
        r = self.resources
        if r.max_num_of_threads < 1:
            raise OcclumConfigError("max_num_of_threads must be at least 1")
        if r.init_num_of_threads is not None and r.init_num_of_threads > r.max_num_of_threads:
            raise OcclumConfigError("init_num_of_threads must not exceed max_num_of_threads")
        if r.user_space_max_size is not None and r.user_space_size > r.user_space_max_size:
            raise OcclumConfigError("user_space_size must not exceed user_space_max_size")
        if (
            r.kernel_space_heap_max_size is not None
            and r.kernel_space_heap_size > r.kernel_space_heap_max_size
        ):
            raise OcclumConfigError(
                "kernel_space_heap_size must not exceed kernel_space_heap_max_size"
            )

    def _check_mounts(self) -> None:
        targets = {"/"}
        for mount in (HostMount(self.connection_mount, self.connection_source), *self.extra_hostfs):
            _check_enclave_path(mount.target, "hostfs target")
            if mount.target in targets:
                raise OcclumConfigError(f"mount target {mount.target} is used twice")
            if any(
                _is_under(mount.target, t) or _is_under(t, mount.target) for t in targets - {"/"}
            ):
                raise OcclumConfigError(f"hostfs target {mount.target} overlaps another mount")
            if any(_is_under(ep, mount.target) for ep in self.entry_points):
                raise OcclumConfigError(
                    f"hostfs target {mount.target} would put an entry point on the host"
                )
            targets.add(mount.target)

    def to_json(self) -> dict[str, object]:
        """The Occlum.json document (validated)."""
        self.validate()
        metadata: dict[str, object] = {
            "product_id": self.product_id,
            "version_number": self.version_number,
            "debuggable": self.debuggable,
            "enable_kss": False,
            "family_id": {"high": "0x0", "low": "0x0"},
            "ext_prod_id": {"high": "0x0", "low": "0x0"},
        }
        if self.disable_log is not None:
            metadata["disable_log"] = self.disable_log
        return {
            "resource_limits": self.resources.resource_limits(),
            "process": self.resources.process(),
            "entry_points": list(self.entry_points),
            "env": {"default": list(self.env_default), "untrusted": list(self.env_untrusted)},
            "metadata": metadata,
            "feature": {
                "amx": self.amx,
                "pkru": self.pkru,
                "io_uring": self.io_uring,
                "enable_edmm": self.enable_edmm,
                "enable_posix_shm": self.enable_posix_shm,
            },
            "mount": [
                _root_mount(),
                HostMount(self.connection_mount, self.connection_source).to_json(),
                *(m.to_json() for m in self.extra_hostfs),
            ],
        }

    def render(self) -> str:
        return json.dumps(self.to_json(), indent=4) + "\n"


def _root_mount() -> dict[str, object]:
    """Occlum's encrypted root: the measured image (MAC filled in by ``occlum build``)
    under a writable layer sealed to the enclave."""
    return {
        "target": "/",
        "type": "unionfs",
        "options": {
            "layers": [
                {
                    "target": "/",
                    "type": "sefs",
                    "source": "./build/mount/__ROOT",
                    "options": {"MAC": ""},
                },
                {"target": "/", "type": "sefs", "source": "./run/mount/__ROOT"},
            ]
        },
    }


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _check_enclave_path(path: str, what: str) -> None:
    if not path.startswith("/") or ".." in path.split("/") or posixpath.normpath(path) != path:
        raise OcclumConfigError(f"{what} {path!r} must be a normalised absolute path")
    if path == "/":
        raise OcclumConfigError(f"{what} must not be /")


def _check_env_default(entries: tuple[str, ...]) -> set[str]:
    names: set[str] = set()
    for entry in entries:
        name, sep, value = entry.partition("=")
        if not sep or not _ENV_NAME.match(name):
            raise OcclumConfigError(f"environment entry {entry!r} must be NAME=VALUE")
        if "\n" in value or "\0" in value:
            raise OcclumConfigError(f"environment value of {name} contains a control character")
        if name in names:
            raise OcclumConfigError(f"environment variable {name} is set twice")
        names.add(name)
    return names


def _check_env_untrusted(names: tuple[str, ...], trusted: set[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if not _ENV_NAME.match(name):
            raise OcclumConfigError(f"untrusted environment name {name!r} is not a valid name")
        upper = name.upper()
        if upper in DENIED_UNTRUSTED_NAMES or upper.startswith(DENIED_UNTRUSTED_PREFIXES):
            raise OcclumConfigError(
                f"{name} may not come from the host (env.untrusted): Occlum lets untrusted "
                "variables override measured ones, and this one changes what runs in the "
                "enclave"
            )
        if name in trusted:
            raise OcclumConfigError(
                f"{name} is measured in env.default; listing it as untrusted would let the "
                "host override it"
            )
        if name in seen:
            raise OcclumConfigError(f"untrusted environment name {name} is listed twice")
        seen.add(name)


def write_occlum_json(config: OcclumConfig, path: str | os.PathLike[str]) -> Path | None:
    """Write Occlum.json atomically; keep a differing old file as ``Occlum.json.bak``.

    Returns the backup's path if one was made (``occlum new`` writes a template that
    this replaces; a hand-edited file is kept rather than lost).
    """
    target = Path(path)
    text = config.render()
    backup = None
    if target.exists() and target.read_text(encoding="utf-8") != text:
        backup = target.with_name(target.name + ".bak")
        os.replace(target, backup)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return backup


def connection_mount_of(occlum_json: dict[str, object]) -> tuple[str, str]:
    """(enclave target, host source) of the connection-file hostfs mount.

    Read back from an instance's Occlum.json by the kernelspec writer and the
    provisioner, so they always agree with what was built.
    """
    env = occlum_json.get("env", {})
    defaults = env.get("default", []) if isinstance(env, dict) else []
    wanted = next(
        (e.partition("=")[2] for e in defaults if str(e).startswith("PPML_CONNECTION_DIR=")),
        CONNECTION_MOUNT,
    )
    for mount in occlum_json.get("mount", []) or []:
        if (
            isinstance(mount, dict)
            and mount.get("type") == "hostfs"
            and mount.get("target") == wanted
            and mount.get("source")
        ):
            return str(mount["target"]), str(mount["source"])
    raise OcclumConfigError(
        f"Occlum.json has no hostfs mount at {wanted} for connection files; generate it "
        "with `ppml-kernel occlum config`"
    )
