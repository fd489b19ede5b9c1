"""The cli package's exception base, and how ``ppml-kernel`` shows it.

A command raises :class:`CLIError` (or returns :func:`ppml_kernel.cli.fail`) for a
problem the user can fix; :func:`ppml_kernel.cli.main` prints its one line on stderr
and exits with its code. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from ppml_kernel.errors import PPMLError


class CLIError(PPMLError):
    """A user-fixable command failure: one ``ppml-kernel: ...`` line and an exit code."""

    def __init__(self, message: str, code: int = 1, *, command: str = "ppml-kernel") -> None:
        super().__init__(message)
        self.code = code
        self.command = command
