"""HTML and text for the cluster in notebooks: one module for all of it.

The key broker and its audit log (in ``ppml_kernel.keys.broker``), the session, the
sweep, the security checks and the local cluster hold data; how they look in a
notebook is decided here (their ``_repr_html_`` call in). Every value is escaped; no
field can hold a key.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import TYPE_CHECKING

from ppml_kernel.keys.broker.audit import AuditEvent, iso_time

if TYPE_CHECKING:
    from ppml_kernel.keys.broker.attested import KeyBroker
    from ppml_kernel.keys.broker.sessions import Attestation
    from ppml_kernel.spark.connect import ClusterSession, ClusterStatus, SweepReport
    from ppml_kernel.spark.localcluster import LocalCluster
    from ppml_kernel.spark.security import SecurityReport


class BrokerStatus:
    """The newest verdict per executor, as an HTML table."""

    def __init__(self, broker: KeyBroker) -> None:
        self.address = broker.address
        self.running = broker.running
        self.rows = broker.latest_by_executor()

    def __repr__(self) -> str:
        lines = [f"key broker {self.address} ({'listening' if self.running else 'stopped'})"]
        lines += [attestation_line(a) for a in self.rows] or ["  no executor has attested yet"]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return attestation_table(self.rows, f"Key broker {self.address}")


def attestation_line(a: Attestation) -> str:
    mark = "ok     " if a.ok else "REFUSED"
    return f"  [{mark}] {a.executor}: {a.tee} {a.measurement[:16]} {a.verdict}; {a.reason}"


def attestation_table(rows: list[Attestation], title: str) -> str:
    """Executor, host, TEE, measurement, verdict, time: one row per attestation."""
    body = []
    for a in rows:
        colour = "#1e7d32" if a.ok else "#b71c1c"
        when = datetime.fromtimestamp(a.at, timezone.utc).strftime("%H:%M:%S")
        body.append(
            "<tr>"
            f"<td>{escape(a.executor_id or '?')}</td><td>{escape(a.host or a.peer)}</td>"
            f"<td>{escape(a.tee)}</td>"
            f"<td style='font-family:monospace' title='{escape(a.measurement)}'>"
            f"{escape(a.measurement[:16])}{'&hellip;' if a.measurement else '-'}</td>"
            f"<td style='color:{colour};font-weight:bold'>"
            f"{'accepted' if a.ok else 'REFUSED'}</td>"
            f"<td>{escape(a.reason)}</td>"
            f"<td>{escape(when)} UTC, verified in {a.verify_ms:.1f} ms</td></tr>"
        )
    return (
        f"<div class='ppml-attestations'><b>{escape(title)}</b><table>"
        "<tr><th>executor</th><th>host</th><th>TEE</th><th>measurement</th><th>verdict</th>"
        "<th>reason</th><th>time</th></tr>"
        + ("".join(body) or "<tr><td colspan=7>no executor has attested yet</td></tr>")
        + "</table></div>"
    )




class AuditTable:
    """Audit events as an HTML table (notebooks) or text lines."""

    def __init__(self, events: list[AuditEvent]) -> None:
        self.events = events

    def __repr__(self) -> str:
        if not self.events:
            return "key broker audit log: no events"
        return "\n".join(f"{iso_time(e.at)} {e.line()}" for e in self.events)

    def _repr_html_(self) -> str:
        rows = []
        for e in self.events:
            colour = "#1e7d32" if e.ok else "#b71c1c"
            rows.append(
                "<tr>"
                f"<td>{escape(iso_time(e.at))}</td><td>{escape(e.event)}</td>"
                f"<td style='color:{colour};font-weight:bold'>{'ok' if e.ok else 'REFUSED'}</td>"
                f"<td>{escape(e.executor)}</td><td>{escape(', '.join(e.key_ids))}</td>"
                f"<td>{escape(e.reason)}</td></tr>"
            )
        return (
            "<table class='ppml-audit'><tr><th>time (UTC)</th><th>event</th><th>verdict</th>"
            "<th>executor</th><th>key ids</th><th>reason</th></tr>"
            + ("".join(rows) or "<tr><td colspan=6>no events</td></tr>")
            + "</table>"
        )


def audit_table(broker: KeyBroker, last: int = 50) -> AuditTable:
    """The broker's latest ``last`` audit events, for a notebook."""
    return AuditTable(broker.audit.events()[-last:])


def _header_table(rows: list[tuple[str, str]]) -> str:
    return "".join(
        f"<tr><th style='text-align:left;padding:2px 8px'>{escape(k)}</th>"
        f"<td>{escape(v)}</td></tr>" for k, v in rows
    )


def sweep_html(report: SweepReport) -> str:
    """The sweep's verdicts, then executors not probed, excluded, and any note."""
    title = (f"Attestation sweep: {len(report.accepted)} accepted, {len(report.refused)} "
             f"refused of {len(report.executors)} executor(s) in {report.seconds:.1f} s")
    extra = "".join(
        f"<div style='color:#a15c00'>executor {escape(m)}: not probed; it attests on its "
        "first key request</div>" for m in report.missing
    )
    if report.excluded:
        extra += (
            "<div style='color:#b71c1c'>excluded from this application (killed): executor "
            + escape(", ".join(report.excluded)) + "</div>"
        )
    if report.note:
        extra += f"<div>{escape(report.note)}</div>"
    return attestation_table(report.rows, title) + extra


def session_html(session: ClusterSession) -> str:
    """A connected session: banner if simulated, settings, security checks, the sweep."""
    banner = ""
    if session.simulated:
        banner = (
            "<div style='background:#b71c1c;color:#fff;font-weight:bold;padding:4px;"
            "text-align:center'>SIMULATED ENCLAVES - NOT CONFIDENTIAL</div>"
        )
    head = _header_table(session._header())
    sweep = sweep_html(session.sweep) if session.sweep is not None else ""
    return (
        f"<div class='ppml-spark-session'>{banner}<b>Spark session connected</b>"
        f"<table>{head}</table>{security_html(session.security)}{sweep}</div>"
    )


def status_html(status: ClusterStatus) -> str:
    """Settings, live executors, security checks, the newest verdicts and audit events."""
    head = _header_table([*status.session._header(),
                          ("executors now", ", ".join(status.live) or "none")])
    return (
        f"<div class='ppml-spark-status'><b>Spark status</b><table>{head}</table>"
        f"{security_html(status.session.security)}{status.broker._repr_html_()}"
        f"<b>Audit log (latest)</b>{status.audit._repr_html_()}</div>"
    )


def security_html(report: SecurityReport) -> str:
    """One row per protection: its state in colour, and why."""
    from ppml_kernel.spark.security import BAD, GOOD, INFO, WARN

    colours = {GOOD: "#1e7d32", BAD: "#b71c1c", WARN: "#a15c00", INFO: "#555"}
    body = "".join(
        f"<tr><td style='padding:2px 8px'>{escape(r.protection)}</td>"
        f"<td style='color:{colours[r.level]};font-weight:bold'>"
        f"{escape(r.state)}</td><td>{escape(r.detail)}</td></tr>"
        for r in report.rows
    )
    return (
        f"<div class='ppml-spark-security'><b>{escape(report.title)}</b>"
        "<table><tr><th>protection</th><th>state</th><th>detail</th></tr>"
        f"{body}</table></div>"
    )


def local_cluster_html(cluster: LocalCluster) -> str:
    """The local cluster's daemons: address or work directory, up or down."""
    up = cluster.master is not None and cluster.master.alive()
    rows = [("master", cluster.master_url, "up" if up else "down")]
    rows += [(w.name, str(w.work_dir), "up" if w.alive() else "down") for w in cluster.workers]
    body = "".join(
        f"<tr><td>{escape(a)}</td><td><code>{escape(b)}</code></td><td>{escape(c)}</td></tr>"
        for a, b, c in rows
    )
    return (
        "<table class='ppml-localcluster'><tr><th>daemon</th><th>address / work dir</th>"
        f"<th>state</th></tr>{body}</table>"
    )
