"""Start, wait for and stop the local servers the smoke tests talk to (hub, gateway, lab).

Shared by the hub and gateway smoke tests. Each server runs in a session of its own and
logs to a file: a server that dies or never answers fails the test with its log's tail,
and stopping it also ends whatever it started (proxy, single-user server, kernels).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import requests


def free_port() -> int:
    """A port nothing listens on right now (for one server; several: :func:`free_ports`)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: every socket stays bound until all are chosen.

    Asking :func:`free_port` three times in a row can return one port twice (the kernel
    may hand a just-released port out again); a hub whose own API and proxy ports
    collided failed CI with "Address already in use".
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
        return ports


def start_server(
    cmd: Sequence[str], env: dict[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen:
    """``cmd`` (``python -m MODULE ...``) in a new session, stdout and stderr to ``log``."""
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _name(proc: subprocess.Popen) -> str:
    args = list(proc.args)  # type: ignore[arg-type]
    return str(args[2]) if len(args) > 2 and args[1] == "-m" else Path(args[0]).name


def wait_http(
    url: str,
    proc: subprocess.Popen,
    log: Path,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> None:
    """Until ``url`` answers 200; fail with the log's tail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{_name(proc)} exited:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, headers=headers, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(
                f"{_name(proc)} did not answer {url} within {timeout:g} s:\n"
                + log.read_text()[-3000:]
            )
        time.sleep(0.3)


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM (a hub stops its servers and proxy then), then kill what is left of its session."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
