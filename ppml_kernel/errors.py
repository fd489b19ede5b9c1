"""User-facing errors: one base class, and the one place that turns them into a line.

Every error a user can cause and fix (bad arguments, a missing key, a table-name typo,
an unreachable cluster) is a :class:`PPMLError` or one of Spark's own analysis/execution
errors; :func:`one_line` renders either as one readable line. Everything else is a bug
and keeps its traceback. Messages never contain key material (see data/errors.py).
"""

from __future__ import annotations

import re


class PPMLError(Exception):
    """An expected, user-actionable error: shown as one line, never a traceback."""


class _Verbosity:
    """``%ppml debug on|off``: whether expected errors keep their full traceback.

    Here, below every layer, because the magics set it and Spark's cell display (a
    cancelled job's error) reads it too.
    """

    debug = False


VERBOSITY = _Verbosity()


_OUR_ERROR = re.compile(r"ppml_kernel\.[\w.]+\.(\w+Error): (.+)")
_JAVA_KMS = re.compile(r"KeyAccessDeniedException: (.+)")
# the JVM's ppml-aead/1 reader (ppml_kernel/jvm/java/ppml/AeadFileError.java) in a task,
# and the file Spark says it was reading
_JAVA_AEAD = re.compile(r"ppml\.AeadFileError: \w+Error: ([^\n]+)")
_READ_FILE = re.compile(r"while reading file (\S+?)\.?(?:\s|$)")
_CONDITION = re.compile(r"\[([A-Z][A-Z0-9_.]+)\] (.+)")
_SPARK_MODULES = ("pyspark", "py4j")


def is_spark_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from Spark or py4j (expected, e.g. a bad query or a cancel)."""
    return any(type(exc).__module__.startswith(m) for m in _SPARK_MODULES)


def is_expected(exc: BaseException) -> bool:
    """Errors shown as one line (everything else is a bug and keeps its traceback)."""
    return isinstance(exc, PPMLError) or is_spark_error(exc)


def _tidy(text: str) -> str:
    text = re.sub(r"\s*SQLSTATE: \w+;?", "", text)
    text = text.replace("`", "'")
    return text.strip().rstrip(";").strip()


def one_line(exc: BaseException) -> str:
    """One line for ``exc``: ours as is; Spark's as ``ERROR_CLASS: message``.

    A dataset or key error raised inside a Spark task (and wrapped by Spark in a Java
    stack trace) is found and shown instead of the wrapper.
    """
    if isinstance(exc, PPMLError):
        return str(exc)
    text = str(exc)
    m = _JAVA_AEAD.search(text) if not _OUR_ERROR.search(text) else None
    if m:
        f = _READ_FILE.search(text)
        where = f"{re.sub(r'^file:(//)?', '', f.group(1))}: " if f else ""
        return _tidy(where + m.group(1))[:500]
    m = _OUR_ERROR.search(text) or _JAVA_KMS.search(text)
    if m:
        return _tidy(m.group(m.lastindex or 1).splitlines()[0])[:500]
    if "cancelled" in text and ("job group" in text or "Job " in text):
        m2 = re.search(r"(Job \d+ cancelled[^\n]*)", text)
        return _tidy(m2.group(1)) if m2 else "the Spark job was cancelled"
    condition = None
    get = getattr(exc, "getCondition", None) or getattr(exc, "getErrorClass", None)
    if callable(get):
        try:
            condition = get()
        except Exception:  # best-effort probe: py4j errors may not carry one
            condition = None
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    # py4j: "An error occurred while calling o42.save.\n: org.apache...Exception: [X] msg"
    if lines and lines[0].startswith("An error occurred while calling") and len(lines) > 1:
        lines = lines[1:]
        lines[0] = re.sub(r"^:\s*[\w.$]+(Exception|Error): ", "", lines[0])
    first = lines[0] if lines else type(exc).__name__
    m = _CONDITION.match(first)
    if m:
        condition = condition or m.group(1)
        first = m.group(2)
    first = _tidy(first)
    return (f"{condition}: {first}" if condition else first)[:500]
