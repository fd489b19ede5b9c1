"""``%ppml spark connect|stop|status|audit``: an attested Spark cluster from a notebook."""

from __future__ import annotations

import argparse

from ppml_kernel.magics.registry import MagicContext, MagicError, Subcommand
from ppml_kernel.magics.secret import Note


def _conf_pairs(items: list[str] | None) -> dict[str, str]:
    conf: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise MagicError(f"--conf expects KEY=VALUE, got {item!r}")
        conf[key] = value.strip()
    return conf


def _connect(ctx: MagicContext, args: argparse.Namespace):
    from ppml_kernel.spark.connect import ConnectError, connect

    conf = _conf_pairs(args.conf)
    try:
        attester = ctx.attester()
    except Exception as exc:
        raise MagicError(f"the driver cannot attest: {exc}") from None
    try:
        session = connect(
            args.master,
            policy=args.policy,
            conf=conf,
            attester=attester,
            secret_file=args.secret_file,
            broker_host=args.broker_host,
            broker_port=args.broker_port,
            attest=not args.no_sweep,
            exclude_refused=not args.keep_refused,
            expected_executors=args.executors,
            app_name=args.app_name,
            audit_path=args.audit_log,
        )
    except ConnectError as exc:
        raise MagicError(str(exc)) from None
    if ctx.shell is not None:
        ctx.shell.user_ns["spark"] = session.spark  # as pyspark's shell and sparkmagic do
    return session


def _stop(ctx: MagicContext, args: argparse.Namespace):
    from ppml_kernel.spark.connect import stop

    if stop():
        return Note("Spark session and key broker stopped; no executor can fetch keys now.")
    return Note("No Spark session from %ppml spark connect is running.")


def _status(ctx: MagicContext, args: argparse.Namespace):
    from ppml_kernel.spark.connect import status

    report = status()
    if report is None:
        return Note("Not connected. Use %ppml spark connect MASTER.")
    return report


def _audit(ctx: MagicContext, args: argparse.Namespace):
    from ppml_kernel.spark.connect import current

    session = current()
    if session is None:
        return Note("Not connected: no key broker, no audit log.")
    return session.broker.audit.table(args.last)


def _connect_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("master", metavar="MASTER",
                        help="spark://host:port, local[N], k8s://https://...")
    parser.add_argument("--policy", metavar="FILE",
                        help="executor policy JSON (default: executors must run this "
                             "driver's measurement)")
    parser.add_argument("--conf", action="append", metavar="KEY=VALUE",
                        help="extra Spark setting (repeatable); never the RPC secret")
    parser.add_argument("--secret-file", metavar="FILE",
                        help="standalone cluster's RPC secret (mode 0600); "
                             "default $PPML_SPARK_AUTH_SECRET_FILE")
    parser.add_argument("--broker-host", metavar="HOST",
                        help="address executors reach the key broker at "
                             "(default: spark.driver.host or this host's route to the master)")
    parser.add_argument("--broker-port", metavar="PORT", type=int, default=0,
                        help="key broker port (default: any free port)")
    parser.add_argument("--executors", metavar="N", type=int,
                        help="how many executors the sweep waits for (default: all registered)")
    parser.add_argument("--no-sweep", action="store_true",
                        help="skip the attestation sweep (executors attest on first key request)")
    parser.add_argument("--keep-refused", action="store_true",
                        help="do not remove executors the sweep refused")
    parser.add_argument("--app-name", default="ppml", help="Spark application name")
    parser.add_argument("--audit-log", metavar="FILE",
                        help="also append audit events (JSON lines, never keys) to FILE")


def _audit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--last", type=int, default=50, metavar="N", help="how many events")


def _no_args(parser: argparse.ArgumentParser) -> None:
    return None


SUBCOMMANDS = [
    Subcommand(
        "spark connect",
        "Start a hardened Spark session (as `spark`) on MASTER with a key broker; "
        "attest every executor.",
        _connect_args,
        _connect,
    ),
    Subcommand(
        "spark stop",
        "Stop the Spark session and its key broker.",
        _no_args,
        _stop,
    ),
    Subcommand(
        "spark status",
        "Security settings, executors and their attestation verdicts, recent audit events.",
        _no_args,
        _status,
    ),
    Subcommand(
        "spark audit",
        "The key broker's audit log: every attestation, grant and refusal (never keys).",
        _audit_args,
        _audit,
    ),
]
