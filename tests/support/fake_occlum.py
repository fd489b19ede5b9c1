"""STAND-IN for Occlum's ``occlum`` command: runs the kernel OUTSIDE any enclave.

Used by the provisioner and kernelspec tests, which cannot run Occlum here (no SGX, no
Occlum install). It reproduces the parts of ``occlum run`` that the provisioner relies
on, taken from Occlum's ``tools/occlum`` script, ``src/run/main.c`` and the LibOS's
entry-point check:

* the working directory is the instance (``.__occlum_status`` and ``run/mount/__ROOT``
  must exist), and a second ``occlum run`` on a running instance is refused;
* the program must be absolute, without ``..``, under one of Occlum.json's
  ``entry_points`` (component-wise prefix), else exit 127;
* the process gets ``env.default`` plus the host's values of ``env.untrusted`` names,
  nothing else from the host;
* hostfs mounts: enclave paths in arguments and environment values are translated to
  the host directories Occlum.json names;
* occlum-run forwards no signals: SIGINT/SIGTERM/SIGHUP end it, and the "enclave" (the
  kernel process, in its own session) dies with it.

What it cannot reproduce, it says: variables that point into the enclave image
(``PYTHONHOME``, ``PATH``, ``JAVA_HOME``, ...) take the host's values, and
``PPML_TEE`` is ``simulated`` because there is no ``/dev/sgx`` outside an enclave.
``FAKE_OCCLUM_OUTSIDE_ENV`` lists more host variables to pass (test plumbing such as
``PYTHONPATH``). ``FAKE_OCCLUM_LOG`` receives one JSON line per run.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import PurePosixPath

IMAGE_PROGRAMS = {
    # The image's only entry point: a script that runs ppml_kernel.occlum.launcher.
    "/bin/ppml-kernel-enclave": [sys.executable, "-m", "ppml_kernel.occlum.launcher"],
}
IMAGE_LAYOUT_ENV = {
    "PYTHONHOME",
    "PATH",
    "HOME",
    "JAVA_HOME",
    "LD_LIBRARY_PATH",
    "SPARK_HOME",
    "SPARK_CONF_DIR",
    "PYSPARK_PYTHON",
    "PYSPARK_DRIVER_PYTHON",
}
PR_SET_PDEATHSIG = 1


def fail(message: str, code: int = 1) -> None:
    print(f"[fake occlum] {message}", file=sys.stderr)
    sys.exit(code)


def valid_entry(program: str, entry_points: list[str]) -> bool:
    path = PurePosixPath(program)
    if not path.is_absolute() or ".." in path.parts:
        return False
    return any(
        path.parts[: len(PurePosixPath(ep).parts)] == PurePosixPath(ep).parts for ep in entry_points
    )


def hostfs_map(config: dict, instance: str) -> list[tuple[str, str]]:
    mapping = []
    for mount in config.get("mount", []):
        if mount.get("type") == "hostfs":
            source = os.path.normpath(os.path.join(instance, mount["source"]))
            mapping.append((mount["target"].rstrip("/"), source))
    return sorted(mapping, key=lambda m: -len(m[0]))


def translate(value: str, mapping: list[tuple[str, str]]) -> str:
    for target, source in mapping:
        if value == target or value.startswith(target + "/"):
            return source + value[len(target) :]
    return value


def enclave_env(config: dict, mapping: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in config["env"]["default"]:
        name, _, value = entry.partition("=")
        if name not in IMAGE_LAYOUT_ENV:
            env[name] = translate(value, mapping)
    for name in config["env"].get("untrusted", []):
        if name in os.environ:
            env[name] = os.environ[name]
    outside = os.environ.get("FAKE_OCCLUM_OUTSIDE_ENV", "")
    for name in [*IMAGE_LAYOUT_ENV, *filter(None, outside.split(","))]:
        if name in os.environ:
            env[name] = os.environ[name]
    env["PPML_TEE"] = "simulated"  # no /dev/sgx outside an enclave
    return env


def die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "run":
        fail("this stand-in implements only `occlum run`")
    if len(argv) < 2:
        fail("Error: no program given", 1)
    program, args = argv[1], argv[2:]
    instance = os.getcwd()
    status = os.path.join(instance, ".__occlum_status")
    if not os.path.isfile(status):
        print(
            "Error: the current working directory is not initialized as an Occlum "
            'instance. Need to run "occlum init" first.'
        )
        return 1
    if not os.path.isdir(os.path.join(instance, "run/mount/__ROOT")):
        print(
            "Error: the Occlum image and enclave are not built yet. Need to run "
            '"occlum build" first.'
        )
        return 1
    lock = open(os.path.join(instance, ".fake-occlum-run.lock"), "w")  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(
            "Error: the process of current Occlum instance is running. Need to wait "
            "for the process to finish or kill it first."
        )
        return 1
    with open(os.path.join(instance, "Occlum.json"), encoding="utf-8") as f:
        config = json.load(f)
    if not valid_entry(program, config["entry_points"]):
        fail(f"program path is NOT a valid entry point: {program}", 127)
    if program not in IMAGE_PROGRAMS:
        fail(f"{program} is not in the stand-in's image", 127)
    mapping = hostfs_map(config, instance)
    cmd = [*IMAGE_PROGRAMS[program], *(translate(a, mapping) for a in args)]
    env = enclave_env(config, mapping)
    with open(status, "w") as f:
        f.write("running\n")
    child = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=die_with_parent)

    def end(signum: int, _frame: object) -> None:
        child.kill()
        child.wait()
        with open(status, "w") as f:
            f.write("built\n")
        os._exit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, end)
    log = os.environ.get("FAKE_OCCLUM_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(
                json.dumps(
                    {
                        "argv": argv,
                        "cwd": instance,
                        "cmd": cmd,
                        "env": sorted(env),
                        "pid": os.getpid(),
                        "child": child.pid,
                    }
                )
                + "\n"
            )
    code = child.wait()
    with open(status, "w") as f:
        f.write("built\n")
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
