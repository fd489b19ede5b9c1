"""Live Spark progress under a running cell, in a real PPML kernel (jupyter_client).

A widget frontend is simulated the way JupyterLab's widget manager announces itself: it
opens ipywidgets' ``jupyter.widget.control`` comm. Without it the kernel draws text.
"""

from __future__ import annotations

import io
import queue
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ppml_kernel.data import format as F
from ppml_kernel.keys.files import KeyFileProvider, write_key_file

pytestmark = [pytest.mark.kernel, pytest.mark.spark]

PARTS = 6
ROWS = 600  # per part
SLOW = "slow = F.udf(lambda x: (time.sleep({delay}), x)[1], 'double')"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Six encrypted CSV files and their key file."""
    root = tmp_path_factory.mktemp("progress")
    kf = write_key_file(root / "p.key", "progress-key")
    enc = root / "enc"
    enc.mkdir()
    for p in range(PARTS):
        rows = "".join(f"{i},{i % 5},{i * 1.5}\n" for i in range(p * ROWS, (p + 1) * ROWS))
        with open(enc / f"part-{p}.csv.ppml", "wb") as out:
            F.encrypt_stream(io.BytesIO(("id,grp,amount\n" + rows).encode()), out,
                             KeyFileProvider(kf), "progress-key", 4096)
    return kf, enc


@pytest.fixture(scope="module")
def kernel(tmp_path_factory, dataset):
    """A PPML kernel with the dataset loaded as ``t``, run by its owner (sealed mode: the
    kernel holds a dataset key, so widget traffic is sealed like every output)."""
    from support.owner import Owner

    owner = Owner(tmp_path_factory.mktemp("kernels"))
    try:
        load(owner, *dataset)
        yield owner
    finally:
        owner.stop()


def run(kernel, code: str, timeout: float = 300, during=None) -> list[dict]:
    """Execute ``code``; every IOPub message of it (``during(msg)`` sees each as it comes).

    ``kernel``: a sealed :class:`support.owner.Owner`, or a plain jupyter_client client.
    """
    if hasattr(kernel, "messages"):
        assert during is None
        return kernel.messages(code, timeout)[1]
    kc = kernel
    msg_id = kc.execute(code)
    msgs = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return msgs
        msgs.append(msg)
        if during is not None:
            during(msg)
    raise TimeoutError(code)


def text_of(msgs: list[dict]) -> str:
    out = []
    for m in msgs:
        c = m["content"]
        if m["msg_type"] == "stream":
            out.append(c["text"])
        elif m["msg_type"] in ("display_data", "execute_result", "update_display_data"):
            out.append(c["data"].get("text/plain", ""))
        elif m["msg_type"] == "error":
            out.append(f"{c['ename']}: {c['evalue']}")
    return "\n".join(out)


def open_widget_frontend(kernel) -> None:
    """What JupyterLab's widget manager does on connecting: open the control comm."""
    content = {"comm_id": uuid.uuid4().hex, "target_name": "jupyter.widget.control",
               "data": {}}
    if hasattr(kernel, "send"):
        kernel.send("comm_open", content, metadata={"version": "1.0.0"})
        return
    kernel.shell_channel.send(kernel.session.msg("comm_open", content,
                                                 metadata={"version": "1.0.0"}))


def load(kernel, kf: Path, enc: Path) -> None:
    for code in (f"%ppml keys import {kf}",
                 f"%ppml load {enc} --header --as t --schema 'id long, grp int, amount double' "
                 "--option splitBytes=8192",
                 "from pyspark.sql import functions as F\nimport time"):
        msgs = run(kernel, code)
        assert "ppml:" not in text_of(msgs), text_of(msgs)


def progress_models(msgs: list[dict]) -> dict[str, list[dict]]:
    """IntProgress model id -> its states over time (open, then every update)."""
    models: dict[str, list[dict]] = {}
    for m in msgs:
        c = m["content"]
        if m["msg_type"] == "comm_open":
            state = c["data"].get("state", {})
            if state.get("_model_name") == "IntProgressModel":
                models[c["comm_id"]] = [dict(state)]
        elif m["msg_type"] == "comm_msg" and c["comm_id"] in models:
            data = c["data"]
            if data.get("method") == "update":
                models[c["comm_id"]].append({**models[c["comm_id"]][-1], **data["state"]})
    return models


def test_a_cell_without_spark_shows_nothing(kernel, dataset):
    msgs = run(kernel, "x = sum(range(1000))\nx")
    assert [m["msg_type"] for m in msgs if m["msg_type"] not in ("execute_input", "status")
            ] == ["execute_result"]
    # the running cell's own poller is the only one: none is left behind by earlier cells
    msgs = run(kernel, "import threading\n"
               "[t.name for t in threading.enumerate() if t.name == 'ppml-spark-progress']")
    assert text_of(msgs).strip() == "['ppml-spark-progress']"


def test_widget_panel_shows_progress_then_a_summary(kernel, dataset):
    open_widget_frontend(kernel)
    time.sleep(0.5)
    msgs = run(kernel, SLOW.format(delay=0.002) + "\n"
               "print(t.rdd.getNumPartitions())\n"
               "t.select(slow('amount').alias('a')).agg(F.sum('a')).collect()[0][0]")
    text = text_of(msgs)
    partitions = int(text.split()[0])
    assert partitions >= 4, text  # a multi-partition dataset
    models = progress_models(msgs)
    assert models, [m["msg_type"] for m in msgs]
    # some bar was seen part-way (0 < done < total) and every bar ended full
    partway = [s for states in models.values() for s in states if 0 < s["value"] < s["max"]]
    assert partway, models
    assert all(states[-1]["value"] == states[-1]["max"] for states in models.values())
    assert any(s["max"] >= partitions for states in models.values() for s in states)
    # the widget display, then the one-line summary in its place
    shown = [m for m in msgs if m["msg_type"] == "display_data"
             and "application/vnd.jupyter.widget-view+json" in m["content"]["data"]]
    assert len(shown) == 1
    display_id = shown[0]["content"]["transient"]["display_id"]
    summary = [m for m in msgs if m["msg_type"] == "update_display_data"
               and m["content"]["transient"]["display_id"] == display_id]
    assert summary and "application/vnd.jupyter.widget-view+json" not in summary[-1][
        "content"]["data"]
    line = summary[-1]["content"]["data"]["text/plain"]
    assert line.startswith("Spark: ") and "job" in line and "\n" not in line, line
    assert str(sum(range(PARTS * ROWS)) * 1.5) in text


@pytest.fixture(scope="module")
def plain_kernel(tmp_path_factory):
    """A PPML kernel through plain jupyter_client: no dataset key, so not in sealed mode
    (clear clicks reach the comm through ipykernel's own routing; sealed ones are opened
    on arrival by the sealing gate, see the sealed click test)."""
    from jupyter_client.manager import KernelManager

    prefix = tmp_path_factory.mktemp("prefix")
    subprocess.run([sys.executable, "-m", "ppml_kernel.cli", "install", "--prefix",
                    str(prefix)], check=True, capture_output=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    km = KernelManager(kernel_name="ppml")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        run(kc, "from pyspark.sql import functions as F\nimport time\nspark.range(1).count()")
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        mp.undo()


def test_without_a_widget_frontend_progress_is_text(plain_kernel):
    """No widget manager (nbclient, a console): a text line under the cell, then the
    one-line summary in its place; no widget is created."""
    msgs = run(plain_kernel, SLOW.format(delay=0.001) + "\n"
               "spark.range(0, 3000, 1, 6).select(slow('id').alias('a')).agg(F.sum('a'))"
               ".collect()[0][0]")
    assert not [m for m in msgs if m["msg_type"].startswith("comm")]
    shown = [m for m in msgs if m["msg_type"] == "display_data"
             and m["content"].get("transient", {}).get("display_id", "").startswith(
                 "ppml-progress")]
    assert len(shown) == 1
    assert shown[0]["content"]["data"]["text/plain"].startswith("Spark (running):")
    assert "application/vnd.jupyter.widget-view+json" not in shown[0]["content"]["data"]
    updates = [m["content"]["data"]["text/plain"] for m in msgs
               if m["msg_type"] == "update_display_data"]
    assert updates and updates[-1].startswith("Spark: ") and "\n" not in updates[-1]
    assert any(u.startswith("Spark (running):\nJob ") for u in updates[:-1]), updates
    assert str(sum(range(3000))) in text_of(msgs)


def test_cancel_button_stops_the_job_and_the_kernel_stays_usable(plain_kernel):
    kernel = plain_kernel
    open_widget_frontend(kernel)
    buttons: list[str] = []
    bars: list[str] = []
    clicked: list[float] = []

    def click_when_running(msg: dict) -> None:
        c = msg["content"]
        if msg["msg_type"] == "comm_open":
            model = c["data"].get("state", {}).get("_model_name")
            {"ButtonModel": buttons, "IntProgressModel": bars}.get(model, []).append(
                c["comm_id"])
        if (msg["msg_type"] == "comm_msg" and buttons and not clicked
                and c["comm_id"] in bars and c["data"].get("state", {}).get("max", 1) > 1):
            # the job's tasks are known: it is running; click Cancel as the browser would
            kernel.shell_channel.send(kernel.session.msg("comm_msg", {
                "comm_id": buttons[0],
                "data": {"method": "custom", "content": {"event": "click"}}}))
            clicked.append(time.monotonic())

    start = time.monotonic()
    msgs = run(kernel, SLOW.format(delay=0.05) + "\n"  # minutes if not cancelled
               "spark.range(0, 4000, 1, 8).select(slow('id').alias('a')).agg(F.sum('a'))"
               ".collect()", during=click_when_running)
    assert buttons and clicked, text_of(msgs)
    stopped = time.monotonic()
    print(f"job seen after {clicked[0] - start:.1f} s, stopped {stopped - clicked[0]:.1f} s "
          "after the click")
    assert stopped - clicked[0] < 20, "cancel did not stop the job"
    errors = [m for m in msgs if m["msg_type"] == "error"]
    assert errors and "cancel" in errors[0]["content"]["evalue"].lower()
    summary = [m for m in msgs if m["msg_type"] == "update_display_data"][-1]
    assert "(cancelled)" in summary["content"]["data"]["text/plain"]
    again = run(kernel, "spark.range(1000).count()")
    assert "1000" in text_of(again)


def test_interrupt_cancels_the_cells_jobs_in_a_sealed_session(kernel):
    """Jupyter's stop button (an interrupt, sent in the clear) stops the Spark jobs too."""
    owner = kernel
    code = (SLOW.format(delay=0.05) + "\n"
            "t.select(slow('amount').alias('a')).agg(F.sum('a')).collect()")
    msg_id = owner.session.submit("execute_request", owner.session.execute_content(code))
    time.sleep(8)  # the job is running (each task takes far longer)
    interrupted = time.monotonic()
    owner.km.interrupt_kernel()
    result = owner.session.collect(msg_id, timeout=120)
    assert time.monotonic() - interrupted < 30
    assert result.reply["content"]["status"] == "error"
    assert result.reply["content"]["ename"] == "KeyboardInterrupt", result.reply["content"]
    lines = [m["content"]["data"]["text/plain"] for m in result.messages
             if m["msg_type"] == "update_display_data"]
    assert lines and "(cancelled)" in lines[-1], lines
    after = owner.execute(  # cancelled tasks end within seconds (their workers are killed)
        "deadline = time.monotonic() + 20\n"
        "while sc.statusTracker().getActiveJobsIds() and time.monotonic() < deadline:\n"
        "    time.sleep(0.25)\n"
        "print(sc.statusTracker().getActiveJobsIds())\nprint(t.count())")
    printed = "".join(m["content"]["text"] for m in after.outputs if m["msg_type"] == "stream")
    assert printed.split() == ["[]", str(PARTS * ROWS)], after.text()


def run_and_click(owner, code: str, timeout: float = 300) -> tuple[list[dict], float, Any]:
    """Run ``code`` sealed and click the panel's Cancel (a sealed comm message, as the
    browser sends it) once a job's tasks are known; every opened message, the click's
    time, and the collected result."""
    msg_id = owner.session.submit("execute_request", owner.session.execute_content(code))
    seen: list[dict] = []
    buttons: list[str] = []
    bars: list[str] = []
    deadline = time.monotonic() + timeout
    clicked = 0.0
    while not clicked and time.monotonic() < deadline:
        try:
            raw = owner.kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        msg = owner.session._handle_iopub(raw)
        if msg is None or msg["parent_header"].get("msg_id") != msg_id:
            continue
        seen.append(msg)
        c = msg["content"]
        if msg["msg_type"] == "comm_open":
            model = c["data"].get("state", {}).get("_model_name")
            {"ButtonModel": buttons, "IntProgressModel": bars}.get(model, []).append(
                c["comm_id"])
        if msg["msg_type"] == "status" and c.get("execution_state") == "idle":
            break
        if (msg["msg_type"] == "comm_msg" and buttons and c["comm_id"] in bars
                and c["data"].get("state", {}).get("max", 1) > 1):
            owner.send("comm_msg", {"comm_id": buttons[0], "data": {
                "method": "custom", "content": {"event": "click"}}})
            clicked = time.monotonic()
    assert clicked, text_of(seen)
    result = owner.session.collect(msg_id, timeout=timeout)
    return seen + result.messages, clicked, result


def test_a_sealed_cancel_click_stops_the_job_while_the_cell_runs(kernel):
    """In a sealed session the click is a sealed comm message: the kernel opens it as
    it arrives, so Cancel acts while the cell still holds the main thread."""
    owner = kernel
    open_widget_frontend(owner)
    time.sleep(0.5)
    msgs, clicked, result = run_and_click(
        owner, SLOW.format(delay=0.05) + "\n"  # minutes if not cancelled
        "t.select(slow('amount').alias('a')).agg(F.sum('a')).collect()")
    stopped = time.monotonic()
    print(f"stopped {stopped - clicked:.1f} s after the click")
    assert stopped - clicked < 20, "the sealed click did not stop the job"
    assert result.reply["content"]["status"] == "error"
    assert result.reply["content"]["ename"] != "KeyboardInterrupt"
    errors = [m for m in msgs if m["msg_type"] == "error"]
    assert len(errors) == 1 and "cancel" in errors[0]["content"]["evalue"].lower(), errors
    assert len(errors[0]["content"]["traceback"]) == 1, errors[0]["content"]["traceback"]
    lines = [m["content"]["data"]["text/plain"] for m in msgs
             if m["msg_type"] == "update_display_data"]
    assert lines and "(cancelled)" in lines[-1], lines
    after = owner.execute("1 + 1")
    assert after.outputs[-1]["content"]["data"]["text/plain"] == "2"
    assert str(PARTS * ROWS) in owner.execute("t.count()").text()
