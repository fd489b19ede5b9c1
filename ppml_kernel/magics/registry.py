"""What a ``%ppml`` subcommand is, and the context it runs in.

Each feature module exposes ``SUBCOMMANDS``; the dispatcher in
:mod:`ppml_kernel.magics.ppml` parses arguments with argparse (never letting it
exit or print a traceback) and shows whatever ``run`` returns; errors are turned into
one line in :mod:`ppml_kernel.magics.errors`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ppml_kernel.magics.errors import MagicError

if TYPE_CHECKING:
    from ppml_kernel.tee.base import Attester

__all__ = ["MagicContext", "MagicError", "Subcommand"]  # MagicError: where subcommands get it

@dataclass(frozen=True)
class Subcommand:
    """One ``%ppml NAME`` subcommand (``name`` may hold spaces: ``"spark connect"``)."""

    name: str
    summary: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[MagicContext, argparse.Namespace], object]
    cell: bool = False


@dataclass
class MagicContext:
    """What a subcommand may use: the shell, the kernel (None outside one), the cell body."""

    shell: Any
    kernel: Any = None
    cell: str | None = None
    _display: Callable[[object], None] | None = field(default=None, repr=False)

    def display(self, obj: object) -> None:
        """Show ``obj`` now (rich HTML when it has ``_repr_html_``)."""
        if self._display is not None:
            self._display(obj)
            return
        from ppml_kernel.magics.ppml import show

        show(obj)

    def attester(self) -> Attester:
        """The kernel's attester, or one chosen by ``$PPML_TEE`` outside a PPML kernel."""
        if self.kernel is not None and hasattr(self.kernel, "attester"):
            return self.kernel.attester
        from ppml_kernel.tee import get_attester

        return get_attester()
