"""The ``%ppml`` dispatcher: find the subcommand, parse its arguments, show the result.

Users see one clear line for bad input (unknown subcommand, bad arguments, a
failing subcommand's :class:`MagicError`), never a traceback: the magic is wrapped by
:func:`ppml_kernel.magics.errors.one_red_line`, the one place that decides.
"""

from __future__ import annotations

import argparse
import re
import shlex
from html import escape
from importlib import import_module
from typing import Any, NoReturn

from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import display

from ppml_kernel.magics import SUBCOMMAND_MODULES
from ppml_kernel.magics.errors import STATE, MagicError, one_red_line
from ppml_kernel.magics.registry import MagicContext, Subcommand


class _HelpShown(Exception):
    """argparse printed help (``-h``); nothing else to do.

    Control flow, not an error: deliberately not a ``PPMLError`` (``run`` catches it and
    shows nothing), so it can never reach the red line.
    """


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting the kernel."""

    def error(self, message: str) -> NoReturn:
        raise MagicError(f"{self.prog}: {message}\nusage: {self.format_usage().strip()[7:]}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise MagicError(message.strip())
        raise _HelpShown


def all_subcommands() -> dict[str, Subcommand]:
    """Every registered subcommand by name, plus the built-in ``help``."""
    table: dict[str, Subcommand] = {}
    for module_name in SUBCOMMAND_MODULES:
        for sub in import_module(module_name).SUBCOMMANDS:
            table[sub.name] = sub
    table["help"] = Subcommand("help", "Show this table of subcommands.", lambda p: None, _help)
    table["debug"] = Subcommand(
        "debug", "Show full tracebacks for %ppml errors (on) or one line (off, default).",
        _debug_args, _set_debug)
    return table


def _debug_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("state", choices=["on", "off"], nargs="?", help="default: show the state")


def _set_debug(ctx: MagicContext, args: argparse.Namespace) -> object:
    if args.state is not None:
        STATE.debug = args.state == "on"
    from ppml_kernel.magics.secret import Note

    if STATE.debug:
        return Note("Debug on: %ppml errors show their full traceback.")
    return Note("Debug off: %ppml errors show one line (add --verbose for one full trace).")


def build_parser(sub: Subcommand) -> _Parser:
    prefix = "%%ppml" if sub.cell else "%ppml"
    parser = _Parser(prog=f"{prefix} {sub.name}", description=sub.summary, add_help=True)
    sub.configure(parser)
    return parser


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise MagicError(f"cannot parse the arguments: {exc}") from None


def resolve(words: list[str], table: dict[str, Subcommand]) -> tuple[Subcommand, list[str]]:
    """The longest subcommand name matching the first words, and the remaining words."""
    for n in range(min(len(words), 3), 0, -1):
        name = " ".join(words[:n])
        if name in table:
            return table[name], words[n:]
    known = ", ".join(sorted(table))
    raise MagicError(f"unknown subcommand {' '.join(words[:1])!r}. Known: {known}. Try %ppml help")


def _verbose(words: list[str]) -> tuple[list[str], bool]:
    """Remove ``--verbose`` (any subcommand accepts it) and say whether it was there."""
    kept = [w for w in words if w != "--verbose"]
    return kept, len(kept) != len(words)


def run(line: str, cell: str | None, shell: Any, kernel: Any = None) -> object:
    """Run ``%ppml line`` (or ``%%ppml line`` with ``cell``); returns what to display."""
    words, _ = _verbose(_split(line))
    if not words:
        words = ["help"]
    table = all_subcommands()
    sub, rest = resolve(words, table)
    if cell is not None and not sub.cell:
        raise MagicError(f"%%ppml {sub.name} is not a cell magic; use %ppml {sub.name}")
    if cell is None and sub.cell:
        raise MagicError(
            f"{sub.name} needs a cell body: use %%ppml {sub.name} on a cell's first line"
        )
    parser = build_parser(sub)
    try:
        args = parser.parse_args(rest)
    except _HelpShown:
        return None
    return sub.run(MagicContext(shell=shell, kernel=kernel, cell=cell), args)


@magics_class
class PPMLMagics(Magics):
    """``%ppml SUBCOMMAND ...`` and ``%%ppml SUBCOMMAND ...``."""

    @staticmethod
    def verbose(line: str) -> bool:
        """Whether ``line`` asks for the full trace (``--verbose``)."""
        try:
            return _verbose(shlex.split(line))[1]
        except ValueError:
            return False

    @line_cell_magic
    @one_red_line
    def ppml(self, line: str, cell: str | None = None) -> None:
        result = run(line, cell, self.shell, getattr(self.shell, "kernel", None))
        if result is not None:
            show(result)


_CELL_TAG = re.compile(r"<(t[dh])((?:\s[^>]*)?)>")


def left_align(html: str) -> str:
    """Left-align every table cell (JupyterLab right-aligns them, numbers or not)."""

    def fix(m: re.Match[str]) -> str:
        tag, attrs = m.group(1), m.group(2)
        if "text-align" in attrs:
            return m.group(0)
        if "style=" in attrs:
            attrs = re.sub(r"style=(['\"])", r"style=\1text-align:left;", attrs, count=1)
        else:
            attrs += ' style="text-align:left"'
        return f"<{tag}{attrs}>"

    return _CELL_TAG.sub(fix, html)


def show(obj: object) -> None:
    """Display a subcommand's result (or a note it shows while running), tables left-aligned."""
    if isinstance(obj, str):
        from ppml_kernel.magics.secret import Note

        obj = Note(obj)
    html_of = getattr(obj, "_repr_html_", None)
    html = html_of() if callable(html_of) else None
    if not html:  # images, plain values: IPython's own formatters
        display(obj)
        return
    display({"text/html": left_align(html), "text/plain": repr(obj)}, raw=True)


class HelpTable:
    """Every subcommand with its usage, as HTML in notebooks and as text elsewhere."""

    def __init__(self, table: dict[str, Subcommand]) -> None:
        self.rows = [
            (("%%ppml " if s.cell else "%ppml ") + s.name, s.summary, _usage(s))
            for s in sorted(table.values(), key=lambda s: s.name)
        ]

    def __repr__(self) -> str:
        width = max(len(r[0]) for r in self.rows)
        lines = ["%ppml subcommands (add -h to any for details, --verbose for a full trace):"]
        lines += [f"  {cmd:<{width}}  {summary}" for cmd, summary, _ in self.rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td><code>{escape(cmd)}</code></td><td>{escape(summary)}</td>"
            f"<td><code>{escape(_unbreakable_options(usage))}</code></td></tr>"
            for cmd, summary, usage in self.rows
        )
        return (
            '<table class="ppml-help"><thead><tr><th>command</th><th>what it does</th>'
            f"<th>usage</th></tr></thead><tbody>{rows}</tbody></table>"
            "<p>Add <code>-h</code> to any subcommand for its options, <code>--verbose</code> "
            "for the full traceback of an error.</p>"
        )


def _usage(sub: Subcommand) -> str:
    """The usage on one line (argparse wraps at 80 columns, mid-table)."""
    parser = build_parser(sub)
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=10_000)
    return parser.format_usage().strip().removeprefix("usage: ")


def _unbreakable_options(usage: str) -> str:
    """Non-breaking spaces inside each ``[...]`` group, so a browser wraps between options."""
    out, depth = [], 0
    for ch in usage:
        depth += ch == "["
        depth -= ch == "]"
        out.append("\u00a0" if ch == " " and depth > 0 else ch)
    return "".join(out)


def _help(ctx: MagicContext, args: argparse.Namespace) -> HelpTable:
    return HelpTable(all_subcommands())
