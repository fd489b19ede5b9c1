"""An interrupt during a Spark action stops the cell's jobs even when py4j hides it.

Seen in CI and reproduced by interrupting at different moments of a ``collect()``: the
interrupt lands in py4j's socket read, py4j shuts the connection down, and pyspark's
call-site bookkeeping makes one more py4j call while the interrupt unwinds; that call
fails with ``Py4JNetworkError`` ("Answer from Java side is empty"), which becomes the
cell's error. The progress hook cancelled jobs only for a bare ``KeyboardInterrupt``,
so the job ran on and the reply said Py4JNetworkError.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

from py4j.protocol import Py4JNetworkError

from ppml_kernel.spark.progress import ProgressHook


class FakeMonitor:
    def __init__(self) -> None:
        self.cancels = 0
        self.sc = SimpleNamespace(setLocalProperty=lambda key, value: None)
        self.cancel_requested = threading.Event()

    def request_cancel(self) -> None:
        self.cancels += 1

    def poll(self) -> None:
        pass

    def finish(self) -> None:
        pass


def py4j_error_during(interrupt: BaseException) -> Py4JNetworkError:
    """The error pyspark's ``SCCallSiteSync.__exit__`` raises while ``interrupt`` unwinds."""
    error = Py4JNetworkError("Answer from Java side is empty")
    error.__context__ = interrupt
    return error


def finish_cell(error: BaseException | None) -> tuple[FakeMonitor, SimpleNamespace]:
    hook = ProgressHook(SimpleNamespace())
    monitor = FakeMonitor()
    hook.monitor = monitor  # type: ignore[assignment]
    hook.running = True
    result = SimpleNamespace(error_in_exec=error)
    hook.post_run_cell(result)
    return monitor, result


def test_a_py4j_error_raised_while_an_interrupt_unwinds_cancels_and_reads_as_the_interrupt():
    interrupt = KeyboardInterrupt()
    monitor, result = finish_cell(py4j_error_during(interrupt))
    assert monitor.cancels == 1
    assert result.error_in_exec is interrupt  # the reply says KeyboardInterrupt


def test_a_plain_interrupt_cancels():
    interrupt = KeyboardInterrupt()
    monitor, result = finish_cell(interrupt)
    assert monitor.cancels == 1 and result.error_in_exec is interrupt


def test_other_errors_do_not_cancel_or_change():
    for error in (None, Py4JNetworkError("gone"), ValueError("x")):
        monitor, result = finish_cell(error)
        assert monitor.cancels == 0 and result.error_in_exec is error


def test_a_user_error_raised_while_handling_an_interrupt_is_the_users():
    """Only py4j errors stand for the interrupt; the user's own code is theirs."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("cleanup failed")  # noqa: B904
    except RuntimeError as e:
        error = e
    monitor, result = finish_cell(error)
    assert monitor.cancels == 0 and result.error_in_exec is error


def test_a_query_error_raised_while_handling_an_interrupt_is_the_users():
    """Only py4j's transport errors stand for the interrupt, not a Spark query's error."""
    from pyspark.errors import AnalysisException

    error = AnalysisException(message="TABLE_OR_VIEW_NOT_FOUND")
    error.__context__ = KeyboardInterrupt()
    monitor, result = finish_cell(error)
    assert monitor.cancels == 0 and result.error_in_exec is error


SHELL = textwrap.dedent("""
    import json, sys
    from traitlets.config import Config
    from IPython.core.interactiveshell import InteractiveShell
    from py4j.protocol import Py4JNetworkError
    from ppml_kernel.spark.progress import ProgressHook

    class Monitor:
        import threading
        cancel_requested = threading.Event()

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config, colors="NoColor")
    def call_java():  # as pyspark's SCCallSiteSync.__exit__ fails after py4j's shutdown
        raise Py4JNetworkError("Answer from Java side is empty")

    shell.user_ns["call_java"] = call_java
    mine = sys.argv[1] == "own-handler"
    if mine:
        shell.set_custom_exc((ValueError,), lambda *a, **k: print("the user's handler") or [])
    hook = ProgressHook(shell)
    hook.monitor = Monitor()
    if sys.argv[1].startswith("cancel"):
        hook.monitor.cancel_requested.set()  # the panel's Cancel was clicked
    if sys.argv[1] == "cancel-debug":
        from ppml_kernel.errors import VERBOSITY
        VERBOSITY.debug = True  # as %ppml debug on
    hook._show_stops_as_stops()  # as a Spark cell's start does
    installed = shell.custom_exceptions
    cell = {
        "interrupt": "try:\\n    raise KeyboardInterrupt\\nexcept KeyboardInterrupt:\\n"
                     "    call_java()",
        "error": "raise ValueError('a bug of the user')",
        "own-handler": "raise ValueError('a bug of the user')",
        "cancel": "call_java()",
        "cancel-debug": "call_java()",
    }[sys.argv[1]]
    result = shell.run_cell(cell)
    hook._restore_exc()  # as the cell's end does
    print(json.dumps({"installed": [c.__name__ for c in installed],
                      "after": [c.__name__ for c in shell.custom_exceptions]}))
""")


def run_shell(case: str) -> tuple[str, dict]:
    proc = subprocess.run([sys.executable, "-c", SHELL, case], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    *shown, last = proc.stdout.strip().splitlines()
    return "\n".join(shown), json.loads(last)


def test_an_interrupt_py4j_hides_is_shown_as_the_interrupt():
    """The cell shows what the user did (KeyboardInterrupt), not py4j's transport error
    chained to it; before, the output was the interrupt, "During handling...", then
    Py4JNetworkError."""
    shown, state = run_shell("interrupt")
    assert shown.rstrip().endswith("KeyboardInterrupt:")
    assert "Py4JNetworkError" not in shown and "Answer from Java" not in shown
    assert "During handling" not in shown
    assert state == {"installed": ["Exception"], "after": []}


def test_other_errors_in_a_spark_cell_keep_their_usual_traceback():
    shown, _ = run_shell("error")
    assert "ValueError: a bug of the user" in shown and "Traceback" in shown


def test_a_handler_the_user_set_is_left_alone():
    shown, state = run_shell("own-handler")
    assert "the user's handler" in shown
    assert state == {"installed": ["ValueError"], "after": ["ValueError"]}


def test_a_cancelled_jobs_error_is_one_line_unless_debug_is_on():
    """The panel's Cancel: Spark's error is the one line the user asked for; with
    ``%ppml debug on`` (which the magics set, one layer up) its full trace again."""
    shown, _ = run_shell("cancel")
    assert shown.strip().splitlines() == ["Cancelled: Answer from Java side is empty"]
    shown, _ = run_shell("cancel-debug")
    assert "Traceback" in shown and "Py4JNetworkError: Answer from Java side is empty" in shown
