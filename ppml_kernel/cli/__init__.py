"""``ppml-kernel``: install the kernel, verify quotes, manage the simulated PKI.

Each subcommand lives in its own module exposing ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from ppml_kernel import __version__
from ppml_kernel.cli.errors import CLIError

COMMAND_MODULES: tuple[str, ...] = (
    "ppml_kernel.cli.install",
    "ppml_kernel.cli.lab",
    "ppml_kernel.cli.run",
    "ppml_kernel.cli.verify",
    "ppml_kernel.cli.sim",
    "ppml_kernel.cli.occlum",
    "ppml_kernel.cli.data",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppml-kernel",
        description="A Jupyter kernel for confidential data science: install it, "
        "verify enclave quotes, manage the simulated enclave.",
    )
    parser.add_argument("--version", action="version", version=f"ppml-kernel {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:  # the one place a command's expected error becomes one line
        return fail(str(exc), exc.code, command=exc.command)
    except KeyboardInterrupt:
        print("ppml-kernel: interrupted", file=sys.stderr)
        return 130


def fail(message: str, code: int = 1, *, command: str = "ppml-kernel") -> int:
    """Print one clear error line, prefixed with ``command``, and return the exit code."""
    print(f"{command}: {message}", file=sys.stderr)
    return code
