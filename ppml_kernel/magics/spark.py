"""``%ppml spark connect|stop|status|audit``: an attested Spark cluster from a notebook."""

from __future__ import annotations

import argparse
import os
import sys
from html import escape
from typing import Any

from ppml_kernel.magics.errors import MagicError, user_errors
from ppml_kernel.magics.registry import MagicContext, Subcommand
from ppml_kernel.magics.secret import Note


def _active_session() -> Any:
    """The live SparkSession, without importing pyspark if nothing started it."""
    if "pyspark.sql" not in sys.modules:
        return None
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession()


def describe_session() -> str:
    """One line about the live session (for %ppml status)."""
    spark = _active_session()
    if spark is None:
        return "no session (starts on the first %ppml load, sql or spark connect)"
    sc = spark.sparkContext
    return (f"Spark {spark.version} on {sc.master}, application {sc.applicationId}; "
            "logs: %ppml spark logs")


class LocalSessionReport:
    """``%ppml spark status`` for the kernel's own (local) session."""

    def __init__(self, spark: Any) -> None:
        from ppml_kernel.spark.java import find_java
        from ppml_kernel.spark.session import log_path

        sc = spark.sparkContext
        conf = dict(sc.getConf().getAll())
        runtime = find_java()
        self.rows = [
            ("session", f"local: {sc.master} (not attested: this kernel's own enclave)"),
            ("Spark", spark.version),
            ("application", f"{sc.appName} ({sc.applicationId})"),
            ("parallelism", str(sc.defaultParallelism)),
            ("driver", f"{conf.get('spark.driver.host', '?')} "
                       f"(bound to {conf.get('spark.driver.bindAddress', '?')})"),
            ("Spark UI", "off" if conf.get("spark.ui.enabled") == "false" else
             f"on, {sc.uiWebUrl or '?'} (loopback only)"),
            ("Java", runtime.describe() if runtime else "unknown"),
            ("names", "spark, sc"),
            ("log file", log_path()),
        ]

    def __repr__(self) -> str:
        width = max(len(k) for k, _ in self.rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self.rows)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in self.rows)
        return ("<div class='ppml-spark-status'><b>Spark session</b>"
                f"<table>{rows}</table></div>")


class LogTail:
    """The last lines of the kernel's Spark log, with its path."""

    def __init__(self, path: str, lines: list[str]) -> None:
        self.path = path
        self.lines = lines

    def __repr__(self) -> str:
        return "\n".join([f"Spark log: {self.path} (last {len(self.lines)} lines)",
                          *self.lines])

    def _repr_html_(self) -> str:
        body = escape("\n".join(self.lines)) or "(empty)"
        return (f"<div class='ppml-spark-logs'><p>Spark log: <code>{escape(self.path)}</code> "
                f"(last {len(self.lines)} lines)</p><pre style='max-height:30em;overflow:auto'>"
                f"{body}</pre></div>")


class _LazySession:
    """``spark``/``sc`` before a session exists: the first real use starts one.

    Private and dunder lookups (IPython's display and completion probe those) never start
    Spark; the first public attribute does, and rebinds the name to the real object.
    """

    def __init__(self, shell: Any, name: str) -> None:
        self._shell = shell
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        from ppml_kernel.spark.session import get_or_create_session

        spark = get_or_create_session()
        target = spark if self._name == "spark" else spark.sparkContext
        return getattr(target, attr)

    def __repr__(self) -> str:
        return (f"{self._name}: a local Spark session starts on first use "
                "(or run %ppml spark connect MASTER)")


def install_session_names(shell: Any) -> None:
    """Bind ``spark`` and ``sc`` now (lazily) and to every session the kernel starts."""
    from ppml_kernel.spark.session import on_session

    for name in ("spark", "sc"):
        shell.user_ns.setdefault(name, _LazySession(shell, name))

    def bind(spark: Any) -> None:
        for name, value in (("spark", spark), ("sc", spark.sparkContext)):
            current = shell.user_ns.get(name)
            if current is None or isinstance(current, _LazySession) or _is_spark(current):
                shell.user_ns[name] = value  # never overwrite a user's own variable

    on_session(bind)


def _is_spark(obj: Any) -> bool:
    return type(obj).__module__.startswith("pyspark")


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
    from ppml_kernel.tee import AttesterError

    conf = _conf_pairs(args.conf)
    # an unknown or unavailable TEE, its device or its plugin module missing
    with user_errors(AttesterError, OSError, ImportError, prefix="the driver cannot attest: "):
        attester = ctx.attester()
    with user_errors(ConnectError):
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
    return session


def _stop(ctx: MagicContext, args: argparse.Namespace):
    from ppml_kernel.spark.connect import stop

    if stop():
        return Note("Spark session and key broker stopped; no executor can fetch keys now.")
    return Note("No Spark session from %ppml spark connect is running.")


def _status(ctx: MagicContext, args: argparse.Namespace):
    from ppml_kernel.spark.connect import status

    report = status()
    if report is not None:
        return report
    if _active_session() is None:
        return Note("No Spark session yet: the first %ppml load, %%ppml sql or use of `spark` "
                    "starts a local one; %ppml spark connect MASTER joins a cluster."
                    .replace("`", ""))
    return LocalSessionReport(_active_session())


def _logs(ctx: MagicContext, args: argparse.Namespace):
    from ppml_kernel.spark.session import log_path

    path = log_path()
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()[-args.lines:]
    except FileNotFoundError:
        return Note(f"No Spark log yet ({path}): Spark has not started in this kernel.")
    return LogTail(path, lines)


def _audit(ctx: MagicContext, args: argparse.Namespace):
    from ppml_kernel.spark.connect import current

    session = current()
    if session is None:
        return Note("Not connected: no key broker, no audit log.")
    from ppml_kernel.spark.display import audit_table

    return audit_table(session.broker, args.last)


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


def _logs_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--lines", type=int, default=40, metavar="N",
                        help="how many of the last lines to show (default 40)")


SUBCOMMANDS = [
    Subcommand(
        "spark connect",
        "Start a hardened Spark session (as spark) on MASTER with a key broker; "
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
        "The Spark session: local settings, or a cluster's security settings, executors and "
        "their attestation verdicts.",
        _no_args,
        _status,
    ),
    Subcommand(
        "spark logs",
        "Where Spark's own logs are (a file, not the notebook) and their last lines.",
        _logs_args,
        _logs,
    ),
    Subcommand(
        "spark audit",
        "The key broker's audit log: every attestation, grant and refusal (never keys).",
        _audit_args,
        _audit,
    ),
]
