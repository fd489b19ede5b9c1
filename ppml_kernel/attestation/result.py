"""The typed outcome of verifying a quote, readable as text and as HTML.

Green: verified, policy passed, platform up to date. Amber: passed, but the
platform needs attention (TCB status other than UpToDate, advisories) or the
enclave is SIMULATED and the user allowed it. Red: anything failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape

from ppml_kernel.attestation.checks import Check
from ppml_kernel.attestation.collateral import Window, describe_windows
from ppml_kernel.attestation.quote import QuoteInfo

GREEN, AMBER, RED = "green", "amber", "red"
_COLOURS = {
    GREEN: ("#1e7d32", "#e8f5e9"),
    AMBER: ("#a15c00", "#fff4e0"),
    RED: ("#b71c1c", "#fdecea"),
}
_MONO = "font-family:monospace;text-align:left;word-break:break-all;padding:2px 8px"
SIMULATED_BANNER = (
    "SIMULATED ENCLAVE - NOT CONFIDENTIAL: this quote proves nothing about real hardware"
)


@dataclass(frozen=True)
class VerificationResult:
    """Everything a person or program needs to decide whether to trust a quote."""

    passed: bool
    stage: str  # where it stopped: "parse", "anchor", "collateral", "signature", "policy", "done"
    verified_at: int
    quote: QuoteInfo | None = None
    anchor: str | None = None
    anchor_fingerprint: str | None = None
    simulated: bool = False  # verified by (or chains to) the local simulated root
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    qe_status: str | None = None
    platform_status: str | None = None
    windows: tuple[Window, ...] = ()
    checks: tuple[Check, ...] = ()
    error: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def colour(self) -> str:
        if not self.passed:
            return RED
        if self.simulated or self.tcb_status != "UpToDate" or self.advisory_ids:
            return AMBER
        return GREEN

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def reason(self) -> str:
        """One line saying why it failed (or that it passed)."""
        if self.error:
            return self.error
        failed = self.failed_checks
        if failed:
            c = failed[0]
            return f"policy: {c.name} is {c.actual or '(empty)'}, expected {c.expected}"
        return "verified and accepted by policy"

    @property
    def verdict(self) -> str:
        word = "PASSED" if self.passed else "FAILED"
        status = f" ({self.tcb_status})" if self.tcb_status else ""
        sim = " [SIMULATED]" if self.simulated else ""
        return f"{word}{status}{sim}"

    def to_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "verdict": self.verdict,
            "colour": self.colour,
            "stage": self.stage,
            "reason": self.reason,
            "verified_at": self.verified_at,
            "simulated": self.simulated,
            "anchor": self.anchor,
            "anchor_fingerprint": self.anchor_fingerprint,
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "qe_status": self.qe_status,
            "platform_status": self.platform_status,
            "quote": self.quote.to_dict() if self.quote else None,
            "collateral": [
                {"document": name, "window": window, "valid": ok}
                for name, window, ok in describe_windows(list(self.windows), self.verified_at)
            ],
            "checks": [c.__dict__ for c in self.checks],
            "error": self.error,
            **self.extra,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    # -- presentation -------------------------------------------------------------
    def _fields(self) -> list[tuple[str, str]]:
        q = self.quote
        rows: list[tuple[str, str]] = [
            ("Verdict", self.verdict),
            ("Reason", self.reason),
            ("Verified at", _when(self.verified_at)),
            ("Trust anchor", self.anchor or "-"),
        ]
        if self.tcb_status:
            rows.append(("TCB status", self.tcb_status))
            rows.append(("Advisories", ", ".join(self.advisory_ids) or "none"))
        if self.platform_status and self.qe_status:
            rows.append(("Platform / QE status", f"{self.platform_status} / {self.qe_status}"))
        if q is not None:
            rows += [("TEE", f"{q.tee} (quote v{q.version}, {q.body})"), ("FMSPC", q.fmspc or "-")]
            if q.tee == "SGX":
                rows += [
                    ("MRENCLAVE", q.mrenclave or ""),
                    ("MRSIGNER", q.mrsigner or ""),
                    ("ISVPRODID / ISVSVN", f"{q.isv_prod_id} / {q.isv_svn}"),
                    ("ATTRIBUTES", q.attributes or ""),
                ]
            else:
                rows += [("MRTD", q.mr_td or ""), ("TDATTRIBUTES", q.td_attributes or "")]
                rows += [(f"RTMR{i}", v) for i, v in enumerate(q.rtmr)]
            rows += [("Debug", "yes" if q.debug else "no"), ("REPORT_DATA", q.report_data)]
        return rows

    def __str__(self) -> str:
        lines = []
        if self.simulated:
            lines += [f"*** {SIMULATED_BANNER} ***"]
        lines += [f"{name:<22} {value}" for name, value in self._fields()]
        if self.checks:
            lines.append("Checks:")
            for c in self.checks:
                mark = "ok  " if c.ok else "FAIL"
                lines.append(f"  [{mark}] {c.name}: {c.actual} (expected {c.expected})")
        if self.windows:
            lines.append("Collateral:")
            for name, window, ok in describe_windows(list(self.windows), self.verified_at):
                lines.append(f"  [{'ok  ' if ok else 'OUT '}] {name}: {window}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        fg, bg = _COLOURS[self.colour]
        parts = [
            f'<div class="ppml-verification" style="border:2px solid {fg};border-radius:6px;'
            f'padding:8px;background:{bg};font-family:sans-serif">'
        ]
        if self.simulated:
            parts.append(
                '<div class="ppml-simulated" style="background:#b71c1c;color:#fff;font-weight:bold;'
                f'padding:6px;margin-bottom:6px;text-align:center">{escape(SIMULATED_BANNER)}</div>'
            )
        parts.append(
            f'<div style="color:{fg};font-weight:bold;font-size:1.15em">'
            f"{escape(self.verdict)}</div>"
        )
        parts.append('<table style="border-collapse:collapse;margin-top:4px">')
        for name, value in self._fields():
            parts.append(
                f"<tr><th style='text-align:left;padding:2px 8px'>{escape(name)}</th>"
                f"<td style='{_MONO}'>{escape(value)}</td></tr>"
            )
        parts.append("</table>")
        if self.checks:
            parts.append(
                "<table style='margin-top:6px;border-collapse:collapse;"
                "table-layout:fixed;width:100%'>"
                "<tr><th style='text-align:left;width:9em'>check</th>"
                "<th style='text-align:left'>expected</th><th style='text-align:left'>actual</th>"
                "<th style='width:2em'></th></tr>"
            )
            for c in self.checks:
                mark = "&#10004;" if c.ok else "&#10008;"
                colour = "#1e7d32" if c.ok else "#b71c1c"
                parts.append(
                    f"<tr><td style='text-align:left;padding:2px 8px'>{escape(c.name)}</td>"
                    f"<td style='{_MONO}'>{escape(c.expected)}</td>"
                    f"<td style='{_MONO}'>{escape(c.actual)}</td>"
                    f"<td style='color:{colour}'>{mark}</td></tr>"
                )
            parts.append("</table>")
        if self.windows:
            parts.append(
                "<table style='margin-top:6px'><tr><th>collateral</th><th>valid</th><th></th></tr>"
            )
            for name, window, ok in describe_windows(list(self.windows), self.verified_at):
                mark = "&#10004;" if ok else "&#10008; outside window"
                parts.append(
                    f"<tr><td style='text-align:left;padding:2px 8px'>{escape(name)}</td>"
                    f"<td style='text-align:left'>{escape(window)}</td>"
                    f"<td>{mark}</td></tr>"
                )
            parts.append("</table>")
        parts.append("</div>")
        return "".join(parts)


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") + f" ({ts})"
