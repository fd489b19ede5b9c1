"""The one place where a magic's expected error becomes the user's one red line.

Modelled on sparkmagic's ``exceptions.py``: :func:`one_red_line` wraps every magic
method, so no subcommand needs its own ``try/except``. An expected error
(:func:`ppml_kernel.errors.is_expected`: any :class:`~ppml_kernel.errors.PPMLError`, or
one of Spark's own) is shown as one ``ppml: ...`` line; anything else is a bug and keeps
its traceback, as does every error under ``--verbose`` or ``%ppml debug on``.
Subcommands that call lower layers use :func:`user_errors` to say which of those
layers' errors are the user's to fix (the message then reads as the magic's own).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html import escape
from typing import Any, TypeVar

from ppml_kernel.errors import VERBOSITY, PPMLError, is_expected, one_line

F = TypeVar("F", bound=Callable[..., Any])


class MagicError(PPMLError):
    """A user-facing error: the dispatcher shows the message, never a traceback."""


STATE = VERBOSITY  # ``%ppml debug on|off`` (ppml_kernel.errors: Spark's display reads it too)


@contextmanager
def user_errors(*kinds: type[BaseException], prefix: str = "") -> Iterator[None]:
    """Turn ``kinds`` raised inside the block into a :class:`MagicError` with their message.

    The chain is dropped (``from None``): the lower layer's message already says what
    to fix, and its frames are not the user's.
    """
    try:
        yield
    except kinds as exc:
        raise MagicError(f"{prefix}{exc}") from None


def one_red_line(magic: F) -> F:
    """Decorate a magic method ``(self, line, cell=None)``: expected errors become one line.

    ``verbose(line)`` on the instance, when present, says whether this call asked for
    the full trace (``--verbose``).
    """

    @functools.wraps(magic)
    def wrapped(self: Any, line: str, cell: str | None = None) -> Any:
        verbose = getattr(self, "verbose", lambda line: False)(line)
        try:
            return magic(self, line, cell)
        except KeyboardInterrupt:
            show_error("interrupted")
            return None
        except Exception as exc:  # the one boundary: decide between one line and a trace
            if not is_expected(exc) or verbose or STATE.debug:
                raise  # a bug, or the user asked for the full trace
            show_error(one_line(exc), hint=not isinstance(exc, MagicError))
            return None

    return wrapped  # type: ignore[return-value]


def show_error(message: str, hint: bool = False) -> None:
    """One readable error: red HTML in notebooks, plain text elsewhere."""
    from IPython.display import display

    more = " (--verbose or %ppml debug on: full trace)" if hint and "\n" not in message else ""
    html = (
        # wrapped at spaces (JupyterLab's output <pre> would break words anywhere)
        '<pre class="ppml-error" style="color:#b71c1c;white-space:pre-wrap;'
        'word-break:normal;overflow-wrap:break-word">'
        f"ppml: {escape(message)}<span style='color:#777'>{escape(more)}</span></pre>"
    )
    display({"text/html": html, "text/plain": f"ppml: {message}{more}"}, raw=True)
