"""``ppml-kernel sim init|show|reset``: the simulated enclave's PKI on this machine."""

from __future__ import annotations

import argparse
import json

from ppml_kernel.cli import fail


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sim",
        help="manage the simulated enclave's PKI",
        description="The simulated enclave signs quotes with a PKI made for this installation. "
        "It is NOT confidential: for teaching, demos and tests only.",
    )
    sub = p.add_subparsers(title="actions", metavar="ACTION")
    for name, helptext, handler in (
        ("init", "create the simulated PKI if it does not exist, and show it", _init),
        ("show", "show the simulated PKI (paths, fingerprints, validity; never keys)", _show),
        ("reset", "delete the simulated PKI and make a new one", _reset),
    ):
        action = sub.add_parser(name, help=helptext, description=helptext)
        action.add_argument("--dir", metavar="DIR", help="PKI directory [per-user default]")
        action.add_argument("--json", action="store_true", help="print as JSON")
        if name == "reset":
            action.add_argument(
                "--yes", action="store_true", help="do not ask; old simulated quotes stop verifying"
            )
        action.set_defaults(func=handler)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _print(info: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    from ppml_kernel.cli.output import print_table

    certs = {k: v for k, v in info.items() if isinstance(v, dict) and "subject" in v}
    leaves = info.get("pck_leaves") or {}
    facts = [(k.replace("_", " "), _plain(v)) for k, v in info.items()
             if k not in certs and k not in ("pck_leaves", "private_key_files", "simulated")]
    print_table(facts, title="SIMULATED enclave PKI (NOT confidential: for teaching, demos "
                "and tests)")
    rows = [(name.replace("_", " "), c["subject"].split("CN=")[-1],
             f"{c['not_before'][:10]} to {c['not_after'][:10]}", c["sha256_fingerprint"][:16])
            for name, c in [*certs.items(), *((f"PCK leaf {k}", v) for k, v in leaves.items())]]
    print_table(rows, ["certificate", "subject", "valid", "SHA-256 (first 16)"],
                title="Certificates")
    keys = info.get("private_key_files") or []
    if keys:
        print_table([(k,) for k in keys], ["path"],
                    title="Private key files (mode 0600; never printed)")


def _plain(value: object) -> str:
    """Lists as comma-separated text, not Python reprs."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _init(args: argparse.Namespace) -> int:
    from ppml_kernel.tee.simulated.pki import SimulatedPKI

    pki = SimulatedPKI.load_or_create(args.dir)
    _print(pki.describe(), args.json)
    return 0


def _show(args: argparse.Namespace) -> int:
    from ppml_kernel.tee.simulated.pki import SimulatedPKI, default_pki_dir

    directory = args.dir or default_pki_dir()
    if not SimulatedPKI.exists(directory):
        return fail(f"no simulated PKI in {directory}; create one with: ppml-kernel sim init")
    _print(SimulatedPKI.load(directory).describe(), args.json)
    return 0


def _reset(args: argparse.Namespace) -> int:
    from ppml_kernel.tee.simulated.pki import SimulatedPKI, default_pki_dir

    directory = args.dir or default_pki_dir()
    if not args.yes:
        try:
            answer = input(f"Delete the simulated PKI in {directory} and make a new one? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            return fail("not reset (pass --yes to skip the question)")
    pki = SimulatedPKI.reset(directory)
    _print(pki.describe(), args.json)
    return 0
