"""The enclave's only entry point: start the kernel on one connection file.

``occlum run`` lets the host pick the program (within ``entry_points``) and all of its
arguments. Were the Python interpreter an entry point, the host could run any code
inside the measured enclave with ``-c`` and receive secrets meant for the kernel.
So the image's single entry point, ``/bin/ppml-kernel-enclave``, is a script that
calls :func:`main`, which accepts exactly ``-f <connection dir>/kernel-<id>.json`` and
nothing else, then sets what Occlum needs (no ``fork``: multiprocessing uses
``spawn``) and runs the kernel module.

The connection file itself comes from the host and is untrusted; it only says where
to listen and how to sign Jupyter messages, which the host relays anyway. Secrets
travel through the browser-verified channel, never through it.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import runpy
import sys

from ppml_kernel.occlum.errors import OcclumError

CONNECTION_DIR_ENV = "PPML_CONNECTION_DIR"
DEFAULT_CONNECTION_DIR = "/ppml/conn"
KERNEL_MODULE_ENV = "PPML_KERNEL_MODULE"  # measured (env.default), never untrusted
DEFAULT_KERNEL_MODULE = "ppml_kernel"
CONNECTION_NAME = re.compile(r"^kernel-[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.json$")


class LaunchError(OcclumError, ValueError):
    """The host asked for something other than starting the kernel."""


def connection_file(argv: list[str], connection_dir: str) -> str:
    """The connection file named by ``argv``, if it is the only thing asked for."""
    usage = f"usage: ppml-kernel-enclave -f {connection_dir}/kernel-<id>.json"
    if len(argv) != 2 or argv[0] != "-f":
        raise LaunchError(f"{usage} (got {len(argv)} argument(s))")
    path = argv[1]
    directory, name = os.path.split(path)
    if directory != connection_dir.rstrip("/") or not CONNECTION_NAME.match(name):
        raise LaunchError(f"{usage}; refusing {path!r}")
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    connection_dir = os.environ.get(CONNECTION_DIR_ENV, DEFAULT_CONNECTION_DIR)
    try:
        path = connection_file(args, connection_dir)
    except LaunchError as exc:
        print(f"ppml-kernel-enclave: {exc}", file=sys.stderr)
        return 2
    multiprocessing.set_start_method("spawn", force=True)
    module = os.environ.get(KERNEL_MODULE_ENV, DEFAULT_KERNEL_MODULE)
    sys.argv = [module, "-f", path]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
