"""``ppml-kernel install``: write the kernelspec."""

from __future__ import annotations

import argparse
import sys

from ppml_kernel.cli import fail
from ppml_kernel.kernel.kernelspec import DEFAULT_NAME, TEE_CHOICES, install, kernelspec_dict


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "install",
        help="install the PPML kernelspec",
        description="Install the kernelspec so Jupyter can start the PPML kernel. "
        "Default: the simulated enclave, for this Python environment (--sys-prefix).",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user")
    where.add_argument(
        "--sys-prefix",
        action="store_true",
        help="install into this Python environment (sys.prefix) [default]",
    )
    where.add_argument("--prefix", metavar="DIR", help="install under DIR/share/jupyter/kernels")
    p.add_argument("--name", default=DEFAULT_NAME, help=f"kernelspec name [{DEFAULT_NAME}]")
    p.add_argument("--display-name", help="name shown in Jupyter (default depends on --tee)")
    p.add_argument(
        "--tee",
        choices=TEE_CHOICES,
        default="simulated",
        help="TEE the kernel runs in; 'auto' detects at start [simulated]",
    )
    p.add_argument(
        "--sealed",
        choices=("auto", "required"),
        default="auto",
        help="'required': refuse every unsealed request from the start (always so on real "
        "TEEs); 'auto': a simulated kernel seals from its first secret or key [auto]",
    )
    p.add_argument(
        "--instance",
        metavar="DIR",
        help="Occlum instance directory (with --tee occlum: the kernel starts with 'occlum run')",
    )
    p.set_defaults(func=run)


def build_spec(args: argparse.Namespace) -> dict:
    if args.tee == "occlum" and args.instance:
        from ppml_kernel.occlum.kernelspec import occlum_kernelspec

        return occlum_kernelspec(args.instance, args.name, args.display_name)
    if args.instance:
        raise ValueError("--instance is only meaningful with --tee occlum")
    return kernelspec_dict(args.tee, args.display_name)


def run(args: argparse.Namespace) -> int:
    try:
        spec = build_spec(args)
    except (ValueError, OSError) as exc:
        return fail(str(exc))
    if getattr(args, "sealed", "auto") == "required":
        spec.setdefault("env", {})["PPML_SEALED"] = "required"
        spec.setdefault("metadata", {}).setdefault("ppml", {})["sealed"] = "required"
    prefix = args.prefix if args.prefix else (None if args.user else sys.prefix)
    try:
        path = install(spec, args.name, user=args.user, prefix=prefix)
    except OSError as exc:
        return fail(f"cannot write the kernelspec: {exc}")
    print(f"Installed kernelspec {args.name!r} ({spec['display_name']}) in {path}")
    if args.tee == "simulated":
        print("Note: the simulated enclave is NOT confidential; use it for teaching, demos, tests.")
    return 0
