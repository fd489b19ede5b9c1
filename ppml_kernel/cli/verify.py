"""``ppml-kernel verify``: verify a quote file; exit 0 only when it verifies and passes policy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ppml_kernel.cli import fail


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "verify",
        help="verify an SGX/TDX quote with dcap-qvl and a policy",
        description="Verify a DCAP quote (raw bytes or hex text) against Intel's root (or the "
        "local simulated root with --allow-simulated) and a policy. Exit code 0 only when "
        "verification and policy both pass; 1 when they fail; 2 for unusable input.",
    )
    p.add_argument("quote", metavar="QUOTE", help="quote file (raw bytes, or hex text)")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--collateral",
        metavar="FILE",
        help="collateral JSON (dcap-qvl format); a simulated quote needs the collateral its "
        "enclave wrote with it",
    )
    src.add_argument(
        "--pccs", metavar="URL", help="fetch collateral from this PCCS [default: Intel PCS]"
    )
    p.add_argument("--at", metavar="UNIXTIME", type=int, help="verify at this time [now]")
    p.add_argument("--policy", metavar="FILE", help="policy or reference-values JSON file")
    p.add_argument(
        "--allow-simulated",
        action="store_true",
        help="trust this installation's simulated root (NOT confidential)",
    )
    p.add_argument(
        "--sim-pki",
        metavar="DIR",
        help="simulated PKI directory (only its root certificate is read) [per-user default]",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ppml_kernel.attestation import (
        Collateral,
        CollateralClient,
        CollateralError,
        Policy,
        PolicyError,
        Verifier,
        load_quote_bytes,
    )

    try:
        raw = load_quote_bytes(Path(args.quote).read_bytes())
    except OSError as exc:
        return fail(f"cannot read quote file {args.quote}: {exc.strerror}", 2)
    try:
        policy = Policy.load(args.policy) if args.policy else Policy()
        collateral = Collateral.load(args.collateral) if args.collateral else None
    except (PolicyError, CollateralError) as exc:
        return fail(str(exc), 2)
    if args.allow_simulated:
        policy = replace(policy, allow_simulated=True)
    client = CollateralClient(args.pccs) if args.pccs else None
    verifier = Verifier(policy, simulated_pki_dir=args.sim_pki, collateral_client=client)
    result = verifier.verify(raw, collateral, at=args.at)
    if result.stage == "parse":  # unusable input, not a quote that failed: exit 2
        if args.json:
            print(result.to_json())
        reason = " ".join((result.error or "cannot parse quote").split())
        return fail(f"{args.quote} is not a usable quote ({len(raw)} bytes): {reason}", 2)
    if args.json:
        print(result.to_json())
    else:
        print(result)
        if not result.passed:
            print(f"\nFAILED: {result.reason}", file=sys.stderr)
    return 0 if result.passed else 1
