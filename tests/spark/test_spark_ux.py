"""What a PySpark user sees in a cell: one red line per error, no JVM noise, spark/sc at hand.

Most checks run in one real PPML kernel (jupyter_client), from its very first Spark use.
"""

from __future__ import annotations

import io

import pytest

from ppml_kernel.data import format as F
from ppml_kernel.errors import PPMLError, one_line
from ppml_kernel.keys.files import KeyFileProvider, write_key_file

NOISE = ("Using incubator modules", "log4j", "NativeCodeLoader", "hostname", "WARN ",
         "Traceback", "SparkContext: ", "Py4JJavaError")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """A fresh PPML kernel (Spark not started), run by its owner (sealed requests: the
    kernel is in sealed mode once it holds a dataset key), and an encrypted dataset."""
    from support.owner import Owner

    root = tmp_path_factory.mktemp("ux")
    kf = write_key_file(root / "ux.key", "ux-key")
    enc = root / "enc"
    enc.mkdir()
    for p in range(3):
        rows = "".join(f"{i},g{i % 3},{i * 2}\n" for i in range(p * 100, (p + 1) * 100))
        with open(enc / f"part-{p}.csv.ppml", "wb") as out:
            F.encrypt_stream(io.BytesIO(("id,grp,amount\n" + rows).encode()), out,
                             KeyFileProvider(kf), "ux-key")
    owner = Owner(root / "kernels")
    try:
        yield owner, kf, enc, root
    finally:
        owner.stop()


def run(owner, code: str):
    return owner.execute(code, timeout=300)


def stderr_of(ex) -> str:
    return "".join(m["content"]["text"] for m in ex.outputs
                   if m["msg_type"] == "stream" and m["content"]["name"] == "stderr")


def one_red_line(ex) -> str:
    """The single output of a failed magic: one ``ppml:`` line, nothing else.

    (A progress line of jobs that ran before the error is not an error output.)
    """
    assert ex.status == "ok", ex.text()  # a magic error is not a Python exception
    outputs = [m for m in ex.outputs if not m["content"].get("transient", {}).get(
        "display_id", "").startswith("ppml-progress")]
    assert [m["msg_type"] for m in outputs] == ["display_data"], ex.text()
    text = outputs[0]["content"]["data"]["text/plain"]
    assert text.startswith("ppml: ") and "\n" not in text, text
    assert "ppml-error" in outputs[0]["content"]["data"]["text/html"]
    return text


def test_missing_key_is_named_before_spark_starts(session):
    kc, _, enc, _ = session
    ex = run(kc, f"%ppml load {enc} --header --as t")
    line = one_red_line(ex)
    assert "'ux-key'" in line and "%ppml secret ux-key" in line
    assert "%ppml keys import" in line
    assert line.count("ux-key") == 2, line  # the id, and how to send it: said once
    ex = run(kc, "from pyspark import SparkContext\nprint(SparkContext._gateway is None)")
    assert ex.text().strip() == "True", "the key check started a JVM"


def test_missing_pme_key_is_named_before_spark_starts(session):
    """A Parquet Modular Encryption dataset keeps its key id in the file's crypto
    metadata: it is read from there (no Spark, no key) and named once, with how to send it."""
    import pyarrow as pa

    from ppml_kernel.data.parquet import write_parquet

    kc, _, _, root = session
    pme = root / "pme-dataset"
    pme.mkdir()
    kf = write_key_file(root / "pme.key", "ux-pme-key")
    for p in range(2):
        write_parquet(pa.table({"id": list(range(p * 10, p * 10 + 10))}),
                      str(pme / f"part-{p}.parquet"), KeyFileProvider(kf), "ux-pme-key")
    line = one_red_line(run(kc, f"%ppml load {pme} --as p"))
    assert "'ux-pme-key'" in line and "%ppml secret ux-pme-key" in line, line
    assert "%ppml keys import" in line
    assert line.count("ux-pme-key") == 2, line  # the id, and how to send it: said once
    ex = run(kc, "from pyspark import SparkContext\nprint(SparkContext._gateway is None)")
    assert ex.text().strip() == "True", "the key check started a JVM"


def test_first_spark_use_is_quiet_and_binds_spark_and_sc(session):
    kc, kf, enc, _ = session
    ex = run(kc, "print(repr(spark))")
    assert "starts on first use" in ex.text()
    run(kc, f"%ppml keys import {kf}")
    ex = run(kc, f"%ppml load {enc} --header --as t --schema 'id long, grp string, "
                 "amount long'")
    assert "Loaded" in ex.text() and stderr_of(ex) == "", ex.text()
    for word in NOISE:
        assert word not in ex.text(), word
    ex = run(kc, "print(type(spark).__name__, type(sc).__name__, sc.master)")
    assert ex.text().split()[:2] == ["SparkSession", "SparkContext"], ex.text()


def test_sql_typo_is_one_line_with_the_error_class_and_the_name(session):
    kc = session[0]
    ex = run(kc, "%%ppml sql\nSELECT grp, count(*) FROM salse GROUP BY grp")
    line = one_red_line(ex)
    assert "TABLE_OR_VIEW_NOT_FOUND" in line and "'salse'" in line, line
    assert "`" not in line and "SQLSTATE" not in line
    # --verbose: the full trace, as a normal Python error
    ex = run(kc, "%%ppml sql --verbose\nSELECT * FROM salse")
    assert ex.status == "error" and ex.reply["content"]["ename"] == "AnalysisException"
    assert stderr_of(ex) == ""


def test_debug_switch(session):
    kc = session[0]
    assert "Debug on" in run(kc, "%ppml debug on").text()
    ex = run(kc, "%%ppml sql\nSELECT * FROM salse")
    assert ex.status == "error" and len(ex.reply["content"]["traceback"]) > 1
    assert "Debug off" in run(kc, "%ppml debug off").text()
    one_red_line(run(kc, "%%ppml sql\nSELECT * FROM salse"))


def test_save_with_an_unknown_key_is_one_line(session):
    kc, _, _, root = session
    line = one_red_line(run(kc, f"%ppml save t {root / 'out'} --key no-such-key"))
    assert "'no-such-key'" in line and "%ppml secret no-such-key" in line


def test_spark_logs_keep_what_the_cell_does_not_show(session):
    kc = session[0]
    ex = run(kc, "%ppml spark logs -n 400")
    text = ex.text()
    assert "Spark log: " in text and ".log" in text
    assert "TABLE_OR_VIEW_NOT_FOUND" in text  # the query error's full record is there


def test_spark_status_describes_the_local_session(session):
    kc = session[0]
    text = run(kc, "%ppml spark status").text()
    assert "local[" in text and "Java" in text and "Not connected" not in text
    text = run(kc, "%ppml status").text()
    assert "Java" in text and "Spark 4" in text


def test_sql_chart(session):
    kc = session[0]
    ex = run(kc, "%%ppml sql --chart bar\n"
                 "SELECT grp, sum(amount) AS total FROM t GROUP BY grp ORDER BY grp")
    kinds = [list(m["content"]["data"]) for m in ex.outputs
             if m["msg_type"] in ("display_data", "execute_result")]
    assert any("image/png" in k for k in kinds), kinds
    assert "g0" in ex.text() and "ppml:" not in ex.text()
    line = one_red_line(run(kc, "%%ppml sql --chart line\nSELECT grp FROM t"))
    assert "numeric column" in line


# --------------------------------------------------------------------------- in process


class _Captured(Exception):
    pass


_Captured.__module__ = "pyspark.errors.exceptions.captured"


def test_pme_key_id_is_read_from_the_file_without_a_key(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ppml_kernel.data.errors import DatasetError
    from ppml_kernel.data.parquet import pme_key_id, write_parquet

    kf = write_key_file(tmp_path / "k.key", "footer-key-9")
    target = tmp_path / "x.parquet"
    write_parquet(pa.table({"a": [1, 2]}), str(target), KeyFileProvider(kf), "footer-key-9")
    kf.unlink()  # no key anywhere: the id is in the file's crypto metadata
    assert pme_key_id(str(target)) == "footer-key-9"
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": [1]}), plain)
    with pytest.raises(DatasetError, match="no master key id"):
        pme_key_id(str(plain))


def test_one_line_for_spark_and_our_errors():
    assert one_line(PPMLError("plain")) == "plain"
    exc = _Captured("[TABLE_OR_VIEW_NOT_FOUND] The table or view `salse` cannot be found. "
                    "Verify the spelling. SQLSTATE: 42P01; line 1 pos 14;\n'Project [*]\n+- x")
    assert one_line(exc) == ("TABLE_OR_VIEW_NOT_FOUND: The table or view 'salse' cannot be "
                             "found. Verify the spelling. line 1 pos 14")
    wrapped = _Captured("An error occurred while calling o99.save.\n: org.apache.spark."
                        "SparkException: Job aborted\nCaused by: ...\n  File \"x\"\n"
                        "ppml_kernel.data.errors.UnknownKeyError: no key 'k1' here\n  at ...")
    assert one_line(wrapped) == "no key 'k1' here"


def test_help_usage_is_never_broken_inside_an_option():
    from ppml_kernel.magics.ppml import HelpTable, all_subcommands

    table = HelpTable(all_subcommands())
    html = table._repr_html_()
    for _cmd, _summary, usage in table.rows:
        assert "\n" not in usage
    assert "[--format\u00a0{csv,json,text,parquet}]" in html


def test_tables_are_left_aligned():
    from ppml_kernel.magics.ppml import left_align

    out = left_align("<table><tr><th>a</th><td style='color:red'>1</td></tr></table>")
    assert out.count("text-align:left") == 2


def test_glyphs_render_with_debian_chromiums_fonts():
    """No emoji or symbols outside DejaVu (all a stock Debian Chromium has) in the UI."""
    import re
    from pathlib import Path

    root = Path(__file__).parents[2]
    allowed = set("…·⚠✔✖✓✗●—–’“”→×") | {"\u00a0"}
    sources = [*root.joinpath("extensions/jupyterlab-ppml/src").glob("*.ts"),
               *root.joinpath("extensions/jupyterlab-ppml/style").glob("*.css"),
               *root.joinpath("ppml_kernel").rglob("*.py")]
    found = {}
    for path in sources:
        for line in path.read_text().splitlines():
            code = line.split("//")[0] if path.suffix == ".ts" else line.split("#")[0]
            if path.suffix == ".ts" and code.strip().startswith("*"):
                continue
            for ch in re.findall(r"[^\x00-\x7f]", code):
                if ch not in allowed and ord(ch) > 0xFF and not ch.isalpha():
                    found.setdefault(ch, path.name)
    assert not found, found
