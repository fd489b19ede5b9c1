"""``ppml-kernel lab``: install the simulated kernel here and start JupyterLab on 127.0.0.1."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from ppml_kernel.cli import fail
from ppml_kernel.kernel.kernelspec import DEFAULT_NAME, TEE_CHOICES, install, kernelspec_dict


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "lab",
        help="start JupyterLab with the PPML kernel (simulated enclave)",
        description="Install the PPML kernelspec into this environment and start JupyterLab "
        "on 127.0.0.1 with the notebooks open.",
    )
    p.add_argument(
        "--tee",
        choices=TEE_CHOICES,
        default="simulated",
        help="TEE kind for the kernelspec [simulated]",
    )
    p.add_argument("--port", type=int, default=8888, help="port on 127.0.0.1 [8888]")
    p.add_argument("--notebooks", metavar="DIR", help="directory to open [./notebooks if present]")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.set_defaults(func=run)


NOTIFICATIONS = "@jupyterlab/apputils-extension:notification"


def quiet_news(prefix: str | os.PathLike[str]) -> Path:
    """Turn JupyterLab's news pop-up and update check off in this environment.

    Written to the environment's settings overrides (``share/jupyter/lab/settings/
    overrides.json``), merged with what is there; a choice already made there is kept.
    The pop-up asks every new user about fetching news from the internet, which a
    confidential-computing notebook server should not do unasked.
    """
    path = Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    try:
        overrides = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        overrides = {}
    section = overrides.setdefault(NOTIFICATIONS, {})
    section.setdefault("fetchNews", "false")
    section.setdefault("checkForUpdates", False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(overrides, indent=2) + "\n")
    return path


def run(args: argparse.Namespace) -> int:
    if shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is None:
        return fail("JupyterLab is not installed here: pip install 'ppml-kernel[lab]'")
    path = install(kernelspec_dict(args.tee), DEFAULT_NAME, prefix=sys.prefix)
    print(f"Kernelspec {DEFAULT_NAME} installed in {path}")
    quiet_news(sys.prefix)
    root = Path(args.notebooks or ("notebooks" if Path("notebooks").is_dir() else ".")).resolve()
    argv = [
        str(Path(sys.executable).parent / "jupyter-lab"),
        "--ip=127.0.0.1",
        f"--port={args.port}",
        f"--ServerApp.root_dir={root}",
        f"--MappingKernelManager.default_kernel_name={DEFAULT_NAME}",
        "--KernelManager.transport_encryption=auto",
        "--LabApp.news_url=None",  # no announcements fetched from the internet
    ]
    if args.no_browser:
        argv.append("--no-browser")
    if os.geteuid() == 0:  # containers and CI machines run as root
        argv.append("--allow-root")
    print("Starting JupyterLab on 127.0.0.1 (simulated enclave, local Spark). Ctrl-C stops it.")
    sys.stdout.flush()
    os.execv(argv[0], argv)
    return 0  # not reached
