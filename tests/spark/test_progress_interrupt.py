"""An interrupt during a Spark action stops the cell's jobs even when py4j hides it.

Seen in CI and reproduced by interrupting at different moments of a ``collect()``: the
interrupt lands in py4j's socket read, py4j shuts the connection down, and pyspark's
call-site bookkeeping makes one more py4j call while the interrupt unwinds; that call
fails with ``Py4JNetworkError`` ("Answer from Java side is empty"), which becomes the
cell's error. The progress hook cancelled jobs only for a bare ``KeyboardInterrupt``,
so the job ran on and the reply said Py4JNetworkError.
"""

from __future__ import annotations

from types import SimpleNamespace

from py4j.protocol import Py4JNetworkError

from ppml_kernel.spark.progress import ProgressHook


class FakeMonitor:
    def __init__(self) -> None:
        self.cancels = 0
        self.sc = SimpleNamespace(setLocalProperty=lambda key, value: None)

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
