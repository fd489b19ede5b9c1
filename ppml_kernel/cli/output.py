"""Tables and progress bars of the ``ppml-kernel`` command, drawn by rich.

One home for how the CLI prints structured output: plain, aligned and uncoloured when
piped (tests, logs), colours and a live bar on a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

PROGRESS_MIN_BYTES = 64 << 20


def console(stream: TextIO | None = None) -> Any:
    from rich.console import Console

    # piped output keeps long values (paths, fingerprints) whole instead of wrapping them
    return Console(file=stream or sys.stdout, highlight=False, soft_wrap=True)


def print_table(rows: Iterable[Sequence[object]], headers: Sequence[str] | None = None,
                title: str | None = None, stream: TextIO | None = None) -> None:
    """Left-aligned columns; ``headers=None`` for key/value lists."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD if headers else None, show_header=bool(headers),
                  title=title, title_justify="left", title_style="bold", pad_edge=False)
    for name in headers or ("", ""):
        table.add_column(name, justify="left", overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    out = console(stream)
    out.width = max(out.width, 160)
    out.print(table)


class Progress:
    """A byte-count progress bar on stderr for large inputs (or when asked for)."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.label = label
        self.total = max(total, 1)
        self.enabled = total >= PROGRESS_MIN_BYTES if enabled is None else enabled
        self._bar: Any = None
        if self.enabled:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                            DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                            console=console(stream or sys.stderr))
            self._task = self._bar.add_task(label, total=self.total)
            self._bar.start()

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
