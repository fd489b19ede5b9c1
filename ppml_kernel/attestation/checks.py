"""One row of a verification report: a named check, what was expected, what was found.

Kept apart from :mod:`policy` so the per-TEE policy sections in ``verifiers/`` and the
result type can use it without importing the policy document.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """One policy or verification check, shown as a row in reports."""

    name: str
    ok: bool
    expected: str
    actual: str


def allow_list(name: str, allowed: tuple[str, ...], actual: str | None) -> Check:
    """``actual`` must be one of ``allowed`` (used only when the list is non-empty)."""
    return Check(name, actual in allowed, " | ".join(allowed), actual or "")
