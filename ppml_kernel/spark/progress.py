"""Live Spark progress under the running cell, as sparkmonitor shows it for plain PySpark.

How it works, and why this way:

* IPython's ``pre_run_cell`` / ``post_run_cell`` events bracket every cell. Only when a
  SparkContext exists (checked without importing pyspark) or one is created during the
  cell (:func:`ppml_kernel.spark.session.on_session`) does a cell get a *job group* and a
  poller thread; other cells cost one dictionary lookup.
* The poller reads ``SparkContext.statusTracker()`` (jobs of the cell's group, their
  stages and task counts) every :data:`POLL_SECONDS`. No listener jar: the tracker is
  Spark's public status API and is enough for bars; reasons of failed tasks come from
  Spark's status store when a stage reports failures.
* Nothing is shown until the cell's first job appears. Then a panel of ipywidgets (one
  bar per job, stages and tasks done/total, elapsed time, failed tasks in red with the
  reason, a Cancel button) appears under the cell; when the cell ends it is replaced by
  a one-line summary. Without a widget frontend (nbclient, a console) the same display
  is text, updated about once a second.
* Cancel: a click arrives as a comm message on the shell channel while the cell is still
  running, so the main thread cannot handle it. ipykernel (7+) asks each comm which
  subshell should get its messages on the shell-channel thread; the button's comm
  answers that question by setting the cancel flag there (and routing the message as
  usual). The poller then cancels the cell's job group; the cell sees Spark's
  "cancelled" error as one line, and the kernel stays usable. A *sealed* click is
  opened by the sealing gate on that same thread as it arrives
  (``PPMLKernel.shell_channel_thread_main``), which then asks the comm the same
  question, so Cancel works in sealed sessions too. Jupyter's interrupt is the other
  way: ``post_run_cell`` cancels the jobs of a cell that ended in ``KeyboardInterrupt``
  (or in the py4j error an interrupt during a Spark action can turn into).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import html
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

POLL_SECONDS = 0.25
TEXT_EVERY_SECONDS = 1.0
GROUP_PREFIX = "ppml-cell-"


@dataclass
class StageState:
    stage_id: int
    name: str = ""
    tasks: int = 0
    done: int = 0
    active: int = 0
    failed: int = 0
    attempt: int = 0


@dataclass
class JobState:
    job_id: int
    status: str = "RUNNING"
    stage_ids: list[int] = field(default_factory=list)
    stages: dict[int, StageState] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def tasks(self) -> int:
        return sum(s.tasks for s in self.stages.values())

    @property
    def tasks_done(self) -> int:
        return sum(min(s.done, s.tasks) for s in self.stages.values())

    @property
    def stages_done(self) -> int:
        if self.status == "SUCCEEDED":
            return len(self.stage_ids)
        return sum(1 for s in self.stages.values() if s.tasks and s.done >= s.tasks)

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.stages.values())

    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def line(self) -> str:
        total = self.tasks
        done = total if self.status == "SUCCEEDED" and total else self.tasks_done
        text = (f"Job {self.job_id}: stages {self.stages_done}/{len(self.stage_ids)}, "
                f"tasks {done}/{total}, {self.elapsed():.1f} s")
        if self.failed:
            text += f", {self.failed} failed task{'s' if self.failed != 1 else ''}"
        if self.status not in ("RUNNING", "SUCCEEDED", "UNKNOWN"):
            text += f" ({self.status.lower()})"
        return text


def _active_context() -> Any:
    """The live SparkContext, without importing pyspark (a cell without Spark pays nothing)."""
    module = sys.modules.get("pyspark.core.context") or sys.modules.get("pyspark.context")
    cls = getattr(module, "SparkContext", None)
    sc = getattr(cls, "_active_spark_context", None)
    if sc is None or getattr(sc, "_jsc", None) is None:
        return None
    return sc


def _widget_frontend() -> bool:
    """Whether a Jupyter widget manager is connected (it opens ipywidgets' control comm)."""
    module = sys.modules.get("ipywidgets.widgets.widget")
    widget = getattr(module, "Widget", None)
    return getattr(widget, "_control_comm", None) is not None


class CellMonitor:
    """The jobs of one cell: polls the status tracker and draws the panel."""

    def __init__(self, sc: Any, group: str, title: str) -> None:
        self.sc = sc
        self.group = group
        self.title = title
        self.jobs: dict[int, JobState] = {}
        self.reasons: list[str] = []
        self.started = time.monotonic()
        self.cancel_requested = threading.Event()
        self.cancelled = False
        self._stop = threading.Event()
        self._display_id = f"ppml-progress-{uuid.uuid4().hex}"
        self._panel: _Panel | None = None
        self._last_text = 0.0
        self._reasons_seen: dict[int, int] = {}
        # Jobs of this cell: its job group's, and any job that starts while it runs (code
        # that sets its own group, like the attestation sweep, replaces the cell's).
        try:
            self.baseline = max(sc.statusTracker().getActiveJobsIds(), default=-1)
        # best-effort probe: a stopped context or a gone JVM: count every job
        except Exception:
            self.baseline = -1
        ctx = contextvars.copy_context()  # the cell's parent header: output goes under it
        self._thread = threading.Thread(target=ctx.run, args=(self._loop,),
                                        name="ppml-spark-progress", daemon=True)

    # -- polling ---------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.poll()
            except Exception:  # boundary: a thread loop; the JVM went away
                return

    def request_cancel(self) -> None:
        """Ask the poller to cancel this cell's jobs (safe from any thread)."""
        if self._stop.is_set() or self.cancel_requested.is_set():
            return
        self.cancel_requested.set()

    def poll(self) -> None:
        tracker = self.sc.statusTracker()
        if self.cancel_requested.is_set() and not self.cancelled:
            self.cancelled = True
            self.sc.cancelJobGroup(self.group)
            for job_id in tracker.getActiveJobsIds():
                if job_id > self.baseline:
                    self.sc._jsc.sc().cancelJob(job_id)
        ids = set(tracker.getJobIdsForGroup(self.group)) | set(self.jobs)
        ids.update(j for j in tracker.getActiveJobsIds() if j > self.baseline)
        for job_id in sorted(ids):
            info = tracker.getJobInfo(job_id)
            if info is None:
                continue
            job = self.jobs.setdefault(job_id, JobState(job_id))
            job.status = str(info.status)
            job.stage_ids = sorted(int(s) for s in info.stageIds)
            if job.status != "RUNNING" and job.ended is None:
                job.ended = time.monotonic()
            for sid in job.stage_ids:
                stage = tracker.getStageInfo(sid)
                if stage is None:
                    continue
                state = job.stages.setdefault(sid, StageState(sid))
                state.name = str(stage.name)
                state.tasks = int(stage.numTasks)
                state.done = int(stage.numCompletedTasks)
                state.active = int(stage.numActiveTasks)
                state.failed = int(stage.numFailedTasks)
                state.attempt = int(stage.currentAttemptId)
                if state.failed > self._reasons_seen.get(sid, 0):
                    self._reasons_seen[sid] = state.failed
                    self._collect_reasons(state)
        self._draw()

    def _collect_reasons(self, stage: StageState) -> None:
        """First line of each failed task's error (Spark's status store; best effort)."""
        from ppml_kernel.errors import one_line

        try:
            tasks = self.sc._jsc.sc().statusStore().taskList(stage.stage_id, stage.attempt, 200)
            errors = [tasks.apply(i).errorMessage() for i in range(tasks.size())]
            texts = [e.get() for e in errors if e.isDefined()]
        # best-effort probe: Spark's status store may be gone; say where the logs are
        except Exception:
            texts = []
        for text in texts or ["see %ppml spark logs"]:
            reason = one_line(_TextError(text))
            entry = f"stage {stage.stage_id}: {reason}"
            if entry not in self.reasons:
                self.reasons.append(entry)

    # -- drawing ---------------------------------------------------------------

    def _draw(self) -> None:
        if not self.jobs:
            return  # nothing is shown for a cell that started no Spark job
        if self._panel is None:
            self._panel = _Panel.create(self, _widget_frontend())
        self._panel.update(self)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def summary(self) -> str:
        jobs = list(self.jobs.values())
        tasks = sum(j.tasks_done if j.status != "SUCCEEDED" else j.tasks for j in jobs)
        stages = sum(len(j.stage_ids) for j in jobs)
        text = (f"Spark: {len(jobs)} job{'s' if len(jobs) != 1 else ''}, {stages} stage"
                f"{'s' if stages != 1 else ''}, {tasks} task{'s' if tasks != 1 else ''} "
                f"in {self.elapsed():.1f} s")
        failed = [j for j in jobs if j.status == "FAILED"]
        if self.cancelled:
            text += " (cancelled)"
        elif failed:
            text += f" ({len(failed)} failed)"
        failed_tasks = sum(j.failed for j in jobs)
        if failed_tasks:
            text += f"; {failed_tasks} failed task{'s' if failed_tasks != 1 else ''}"
            if self.reasons:
                text += f": {self.reasons[0]}"
        return text

    def finish(self) -> None:
        """Stop polling; replace the panel by the one-line summary."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        # best-effort: a last poll of a context that may be stopped
        with contextlib.suppress(Exception):
            self.poll()
        if self._panel is not None:
            self._panel.close(self)


class _TextError(Exception):
    """A task's error text, so :func:`one_line` can shorten it like any Spark error."""


class _Panel:
    """The display under the cell: ipywidgets, or text when no widget frontend is there."""

    def __init__(self, monitor: CellMonitor) -> None:
        self.monitor = monitor
        self.display_id = monitor._display_id

    @staticmethod
    def create(monitor: CellMonitor, widgets: bool) -> _Panel:
        if widgets:
            try:
                return _WidgetPanel(monitor)
            except ImportError:
                pass
        return _TextPanel(monitor)

    def update(self, monitor: CellMonitor) -> None:
        raise NotImplementedError

    def close(self, monitor: CellMonitor) -> None:
        from IPython.display import update_display

        text = monitor.summary()
        color = "#b71c1c" if (monitor.cancelled or any(
            j.status == "FAILED" for j in monitor.jobs.values())) else "#555"
        bundle = {
            "text/plain": text,
            "text/html": f"<div class='ppml-progress-summary' style='color:{color}'>"
                         f"{html.escape(text)}</div>",
        }
        update_display(bundle, raw=True, display_id=self.display_id)


class _TextPanel(_Panel):
    def __init__(self, monitor: CellMonitor) -> None:
        from IPython.display import display

        super().__init__(monitor)
        self._last = 0.0
        display(self._bundle(monitor), raw=True, display_id=self.display_id)

    @staticmethod
    def _bundle(monitor: CellMonitor) -> dict[str, str]:
        lines = [j.line() for j in monitor.jobs.values()]
        lines += [f"failed: {r}" for r in monitor.reasons[:3]]
        text = "\n".join(["Spark (running):", *lines])
        return {"text/plain": text,
                "text/html": f"<pre class='ppml-progress'>{html.escape(text)}</pre>"}

    def update(self, monitor: CellMonitor) -> None:
        from IPython.display import update_display

        now = time.monotonic()
        if now - self._last < TEXT_EVERY_SECONDS:
            return
        self._last = now
        update_display(self._bundle(monitor), raw=True, display_id=self.display_id)


class _WidgetPanel(_Panel):
    def __init__(self, monitor: CellMonitor) -> None:
        import ipywidgets as w
        from IPython.display import display

        super().__init__(monitor)
        self.w = w
        self.header = w.HTML()
        self.cancel = w.Button(description="Cancel", button_style="danger",
                               tooltip="Cancel this cell's Spark jobs",
                               layout=w.Layout(width="90px"))
        self.cancel.on_click(lambda _b: monitor.request_cancel())
        self._route_clicks_while_busy(self.cancel, monitor)
        self.rows = w.VBox()
        self.failures = w.HTML()
        self.bars: dict[int, tuple[Any, Any]] = {}
        self.box = w.VBox([w.HBox([self.header, self.cancel]), self.rows, self.failures],
                          layout=w.Layout(border="1px solid #ddd", padding="4px"))
        self.box.add_class("ppml-progress")
        model = {"version_major": 2, "version_minor": 0, "model_id": self.box.model_id}
        display({"application/vnd.jupyter.widget-view+json": model,
                 "text/plain": "Spark job progress (a Jupyter widget)"},
                raw=True, display_id=self.display_id)

    @staticmethod
    def _route_clicks_while_busy(button: Any, monitor: CellMonitor) -> None:
        """Act on a click on the shell-channel thread, while the cell holds the main thread.

        ipykernel 7 asks a comm which subshell gets its incoming messages; answering that
        is our chance to see the click before the busy main thread could.
        """
        comm = getattr(button, "comm", None)
        original = getattr(comm, "_reply_subshell_for", None)
        if comm is None or original is None:
            return

        def route(data: Any, default: Any) -> Any:
            content = data.get("content") if isinstance(data, dict) else None
            if isinstance(content, dict) and content.get("event") == "click":
                monitor.request_cancel()
            return original(data, default)

        comm._reply_subshell_for = route

    def update(self, monitor: CellMonitor) -> None:
        w = self.w
        running = sum(1 for j in monitor.jobs.values() if j.status == "RUNNING")
        state = "cancelling" if monitor.cancel_requested.is_set() else (
            f"{running} running" if running else "waiting")
        self.header.value = (f"<b>Spark</b> &middot; {len(monitor.jobs)} job"
                             f"{'s' if len(monitor.jobs) != 1 else ''} ({state}) &middot; "
                             f"{monitor.elapsed():.1f} s")
        for job in monitor.jobs.values():
            if job.job_id not in self.bars:
                bar = w.IntProgress(min=0, max=1, value=0,
                                    layout=w.Layout(width="40%"))
                label = w.Label()
                self.bars[job.job_id] = (bar, label)
                self.rows.children = (*self.rows.children, w.HBox([bar, label]))
            bar, label = self.bars[job.job_id]
            total = max(job.tasks, 1)
            done = job.tasks if job.status == "SUCCEEDED" else job.tasks_done
            bar.max = total
            bar.value = min(done, total)
            bar.bar_style = {"SUCCEEDED": "success", "FAILED": "danger"}.get(
                job.status, "danger" if job.failed else "info")
            label.value = job.line()
        if monitor.reasons:
            items = "".join(f"<li>{html.escape(r)}</li>" for r in monitor.reasons[:5])
            self.failures.value = (f"<div style='color:#b71c1c'>Failed tasks:<ul "
                                   f"style='margin:2px 0'>{items}</ul></div>")
        self.cancel.disabled = monitor.cancel_requested.is_set()

    def close(self, monitor: CellMonitor) -> None:
        super().close(monitor)
        self.box.close()
        for child in (self.header, self.cancel, self.rows, self.failures,
                      *[x for pair in self.bars.values() for x in pair]):
            child.close()


class ProgressHook:
    """Registered on IPython's cell events: one :class:`CellMonitor` per Spark cell."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.running = False
        self.monitor: CellMonitor | None = None
        self._title = ""
        self._saved_exc: tuple[Any, Any] | None = None
        self._exc_lock = threading.Lock()

    def pre_run_cell(self, info: Any = None) -> None:
        self.running = True
        self._title = (getattr(info, "raw_cell", "") or "").strip().splitlines()[:1]
        self._title = self._title[0][:80] if self._title else "cell"
        sc = _active_context()
        if sc is not None:
            self._watch(sc)

    def session_started(self, spark: Any) -> None:
        """A session was created during a cell: watch it from now on."""
        if not self.running:
            return
        sc = spark.sparkContext
        if self.monitor is not None:
            if self.monitor.sc is sc:
                return
            self.monitor.finish()  # its context was stopped (spark connect replaces it)
        self._watch(sc)

    def _watch(self, sc: Any) -> None:
        group = f"{GROUP_PREFIX}{uuid.uuid4().hex[:12]}"
        try:  # on the cell's own thread: its jobs carry the group (pinned thread mode)
            sc.setJobGroup(group, f"notebook cell: {self._title}", interruptOnCancel=True)
        # best-effort: no job group (a stopped context): no progress for this cell
        except Exception:
            return
        self.monitor = CellMonitor(sc, group, self._title)
        self._show_stops_as_stops()
        self.monitor.start()

    def _show_stops_as_stops(self) -> None:
        """Until the cell ends, show the errors a stop causes as what the user did.

        A job cancelled from the panel raises in the cell (a py4j error with a Java
        stack), and Jupyter's interrupt can surface as py4j's transport error; the user
        asked for both, so neither gets a Java traceback (:func:`_cell_traceback`).
        IPython's custom exception hook does it for this cell only; a hook the user set
        is left alone, and every other error keeps its usual traceback.
        """
        shell = self.shell
        with self._exc_lock:
            if self._saved_exc is not None or not hasattr(shell, "set_custom_exc") \
                    or shell.custom_exceptions:
                return
            self._saved_exc = (shell.custom_exceptions, shell.CustomTB)
            shell.set_custom_exc((Exception,), functools.partial(_cell_traceback, self))

    def _restore_exc(self) -> None:
        with self._exc_lock:
            saved, self._saved_exc = self._saved_exc, None
        if saved is not None:
            self.shell.custom_exceptions, self.shell.CustomTB = saved

    def post_run_cell(self, result: Any = None) -> None:
        self.running = False
        monitor, self.monitor = self.monitor, None
        if monitor is None:
            return
        interrupt = _interrupt_behind(getattr(result, "error_in_exec", None))
        if interrupt is not None:
            # Jupyter's interrupt stops the Python side only: stop the cell's jobs too
            # (the same path as the Cancel button; works in sealed sessions, where the
            # interrupt is one of the few requests sent in the clear)
            monitor.request_cancel()
            # The cell ends in the interrupt the user asked for, not in py4j's transport
            # error that followed it (see _interrupt_behind); the reply is built from this.
            result.error_in_exec = interrupt
            # best-effort: a last poll; the cancel itself was requested above
            with contextlib.suppress(Exception):
                monitor.poll()
        monitor.finish()
        self._restore_exc()
        try:
            for key in ("spark.jobGroup.id", "spark.job.description",
                        "spark.job.interruptOnCancel"):
                monitor.sc.setLocalProperty(key, None)
        # best-effort cleanup: the context may be stopped
        except Exception:
            pass


def _interrupt_behind(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt a cell's error stands for, if any.

    An interrupt that lands while the cell waits in a py4j call (a Spark action) makes
    py4j shut that connection down; pyspark's call-site bookkeeping then makes one more
    py4j call while the interrupt unwinds, and that call can fail with
    ``Py4JNetworkError`` ("Answer from Java side is empty"), which replaces the
    interrupt as the cell's error. A py4j error raised while handling an interrupt is
    that interrupt; any other error (a query's ``AnalysisException`` in the user's own
    ``except KeyboardInterrupt:``) stays the cell's.
    """
    for _ in range(8):  # a chain of py4j errors, then the interrupt
        if exc is None or isinstance(exc, KeyboardInterrupt):
            return exc
        if not type(exc).__module__.startswith("py4j"):
            return None
        exc = exc.__cause__ or exc.__context__
    return None


def _cell_traceback(hook: ProgressHook, shell: Any, etype: type, value: BaseException,
                    tb: Any, tb_offset: int | None = None) -> list[str]:
    """IPython custom exception handler of a Spark cell.

    py4j's error standing for Jupyter's interrupt (:func:`_interrupt_behind`) is shown
    as that interrupt, as IPython shows any interrupted cell; after a cancel from the
    panel, Spark's error is one line (the error reply and message carry it as their
    one-line traceback) unless ``%ppml debug on`` asked for full traces; anything else
    as IPython always does.
    """
    from ppml_kernel.errors import VERBOSITY, is_spark_error, one_line

    interrupt = _interrupt_behind(value)
    if interrupt is not None:
        shell.showtraceback((KeyboardInterrupt, interrupt, interrupt.__traceback__))
        return []
    monitor = hook.monitor  # the cell's current one (a connect mid-cell replaces it)
    cancelled = monitor is not None and monitor.cancel_requested.is_set()
    if not (cancelled and is_spark_error(value)) or VERBOSITY.debug:
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return []
    line = one_line(value)
    stb = [line if "cancel" in line.lower() else f"Cancelled: {line}"]
    shell._showtraceback(etype, value, stb)
    return stb


_hooks: dict[int, ProgressHook] = {}


def install(shell: Any) -> ProgressHook:
    """Register the progress hook on ``shell`` (idempotent)."""
    from ppml_kernel.spark.session import on_session

    hook = _hooks.get(id(shell))
    if hook is None:
        hook = _hooks[id(shell)] = ProgressHook(shell)
        shell.events.register("pre_run_cell", hook.pre_run_cell)
        shell.events.register("post_run_cell", hook.post_run_cell)
        on_session(hook.session_started)
        _notice_widget_frontends(shell)
    return hook


def _notice_widget_frontends(shell: Any) -> None:
    """Let a widget manager announce itself even before anything imported ipywidgets.

    JupyterLab's widget manager opens the ``jupyter.widget.control`` comm on connecting;
    that target exists only once ipywidgets is imported, so a fresh kernel would refuse
    it and never know widgets can be drawn. This stand-in imports ipywidgets only then
    (ipywidgets then registers its own targets) and hands the comm over.
    """
    manager = getattr(getattr(shell, "kernel", None), "comm_manager", None)
    if manager is None or "jupyter.widget.control" in getattr(manager, "targets", {}):
        return

    def opened(comm: Any, msg: dict) -> None:
        from ipywidgets.widgets.widget import Widget

        Widget.handle_control_comm_opened(comm, msg)

    manager.register_target("jupyter.widget.control", opened)


def current(shell: Any) -> CellMonitor | None:
    """The running cell's monitor (for tests and for a cancel from code)."""
    hook = _hooks.get(id(shell))
    return hook.monitor if hook else None
