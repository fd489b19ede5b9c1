"""HTML and text for the attested cluster in notebooks: one module for all of it.

The key broker and its audit log (in ``ppml_kernel.keys.broker``) hold data only;
how a verdict or an audit event looks in a notebook is decided here, next to the
session's and the sweep's views. Every value is escaped; no field can hold a key.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import TYPE_CHECKING

from ppml_kernel.keys.broker.audit import AuditEvent, iso_time

if TYPE_CHECKING:
    from ppml_kernel.keys.broker.attested import KeyBroker
    from ppml_kernel.keys.broker.sessions import Attestation


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
