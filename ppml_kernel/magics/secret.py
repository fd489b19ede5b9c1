"""``%ppml secret NAME`` and ``%ppml secrets``: secrets through the browser-verified channel.

``%ppml secret`` asks the browser(s) that verified this kernel's enclave and blocks like
``getpass`` until the secret arrives, the user cancels, it times out or the cell is
interrupted. Only the name is in the magic line, so nothing secret reaches IPython
history; the value goes to :mod:`ppml_kernel.secrets` (kernel memory only).
"""

from __future__ import annotations

import argparse
import html
import time
from typing import Any

from ppml_kernel.channel.jupyter import manager_of
from ppml_kernel.channel.manager import ChannelError
from ppml_kernel.channel.protocol import ProtocolError, check_name
from ppml_kernel.magics.errors import MagicError, user_errors
from ppml_kernel.magics.registry import MagicContext, Subcommand
from ppml_kernel.secrets import STORE


class Note:
    """A short message shown as HTML in notebooks and as text elsewhere."""

    def __init__(self, text: str, level: str = "info") -> None:
        self.text = text
        self.level = level

    def _repr_html_(self) -> str:
        color = {"info": "#1b7f3b", "warn": "#8a5a00"}.get(self.level, "#1b7f3b")
        return f'<div style="color:{color}">{html.escape(self.text)}</div>'

    def __repr__(self) -> str:
        return self.text


def _configure_secret(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="name to store the secret under, e.g. db_password")
    parser.add_argument("--prompt", default=None, help="text shown in the browser's dialog")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the answer (default 300)"
    )


def _describe(kernel: Any, verdict: dict[str, Any]) -> tuple[str, str]:
    """How the secret came. "Simulated" is the kernel's own knowledge; the browser's
    verdict only adds the TCB status it saw (never used for a decision)."""
    tee = verdict.get("tee", "SGX")
    if getattr(kernel, "simulated", True):
        return f"a SIMULATED {tee} enclave session (NOT confidential)", "warn"
    return f"the browser-verified {tee} enclave session ({verdict.get('status', '?')})", "info"


def _store_answer(name: str, answer: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """Store the value as it arrives and return only the verdict.

    The plaintext is never bound to a name in :func:`run_secret`, so a traceback's
    locals (``%xmode verbose``, ``%debug``) of the magic cannot show it; this frame
    drops its reference even when storing fails.
    """
    try:
        STORE.put(name, answer[0], "browser")
        return answer[1]
    finally:
        del answer


def run_secret(ctx: MagicContext, args: argparse.Namespace) -> Note:
    """Ask the browser for ``args.name`` and keep it in kernel memory."""
    with user_errors(ProtocolError):
        name = check_name(args.name)
    if args.timeout <= 0:
        raise MagicError("--timeout must be a positive number of seconds")
    manager = manager_of(ctx.kernel)
    if manager is None:
        raise MagicError(
            "this kernel has no browser channel (it is not a PPML kernel), so it cannot "
            "receive secrets safely"
        )
    with user_errors(ChannelError):
        verdict = _store_answer(name, manager.request_secret_from(name, args.prompt, args.timeout))
    how, level = _describe(ctx.kernel, verdict)
    return Note(
        f"Secret {name!r} arrived end-to-end encrypted through {how} and is kept in kernel "
        f"memory only. Use it with ppml_kernel.secrets.get({name!r}).",
        level,
    )


class SecretList:
    """Names only, never values."""

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        self.rows = rows

    def _repr_html_(self) -> str:
        if not self.rows:
            return "<em>No secrets yet. Use <code>%ppml secret NAME</code>.</em>"
        body = "".join(
            f"<tr><td><code>{html.escape(n)}</code></td><td>{html.escape(s)}</td>"
            f"<td>{html.escape(t)}</td></tr>"
            for n, s, t in self.rows
        )
        return (
            "<table><thead><tr><th>Secret</th><th>From</th><th>Received</th></tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )

    def __repr__(self) -> str:
        if not self.rows:
            return "No secrets yet. Use %ppml secret NAME."
        return "\n".join(f"{n}  (from {s}, {t})" for n, s, t in self.rows)


def run_secrets(ctx: MagicContext, args: argparse.Namespace) -> SecretList:
    rows = []
    for name in STORE.names():
        item = STORE.secret(name)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item.received))
        rows.append((name, item.source, when))
    return SecretList(rows)


SUBCOMMANDS: list[Subcommand] = [
    Subcommand(
        name="secret",
        summary="Ask the verified browser for a secret (end-to-end encrypted); "
        "blocks like getpass.",
        configure=_configure_secret,
        run=run_secret,
    ),
    Subcommand(
        name="secrets",
        summary="List the names of the secrets in kernel memory (never their values).",
        configure=lambda parser: None,
        run=run_secrets,
    ),
]
