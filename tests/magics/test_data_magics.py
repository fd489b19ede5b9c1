"""%ppml load / save / keys and %%ppml sql: in-process, and in a real PPML kernel."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from support.conftest_spark import KEY_ID, data_key, spark  # noqa: F401

from ppml_kernel.data import format as F
from ppml_kernel.errors import PPMLError
from ppml_kernel.keys.files import read_key_file, write_key_file
from ppml_kernel.keys.store import default_provider
from ppml_kernel.magics.registry import MagicError

CSV = "id,name,amount\n" + "".join(f"{i},name{i % 7},{i * 1.5}\n" for i in range(250))


class Shell:
    def __init__(self) -> None:
        self.user_ns: dict = {}


@pytest.fixture
def ppml(monkeypatch):
    """``ppml(line, cell=None)`` through the real dispatcher, with the data subcommands."""
    from ppml_kernel.magics import ppml as dispatcher

    monkeypatch.setattr(
        dispatcher,
        "SUBCOMMAND_MODULES",
        (*dispatcher.SUBCOMMAND_MODULES, "ppml_kernel.magics.data"),
    )
    shell = Shell()
    shown: list = []

    def call(line: str, cell: str | None = None):
        from ppml_kernel.magics.registry import MagicContext

        original = MagicContext.display
        monkeypatch.setattr(MagicContext, "display", lambda self, obj: shown.append(obj))
        try:
            return dispatcher.run(line, cell, shell)
        finally:
            monkeypatch.setattr(MagicContext, "display", original)

    call.shell = shell
    call.shown = shown
    return call


@pytest.fixture
def sales(tmp_path, data_key):  # noqa: F811
    path = tmp_path / "sales.csv.ppml"
    with open(path, "wb") as out:
        F.encrypt_stream(io.BytesIO(CSV.encode()), out, default_provider(), KEY_ID, 4096)
    return path


def test_load_binds_a_dataframe_and_a_view_then_sql(ppml, spark, sales):  # noqa: F811
    summary = ppml(f"load {sales} --header --schema 'id long, name string, amount double'")
    assert "sales" in ppml.shell.user_ns
    assert "id" in repr(summary) and "bigint" in summary._repr_html_()
    assert ppml.shell.user_ns["sales"].count() == 250
    table = ppml(
        "sql --limit 5", "SELECT name, count(*) AS n FROM sales GROUP BY name ORDER BY name"
    )
    html = table._repr_html_()
    assert "name0" in html and "Showing the first 5 rows" in html and "row cap 5" in html
    full = ppml("sql -o totals", "SELECT name, sum(amount) AS s FROM sales GROUP BY name")
    assert "7 rows" in full.note() and "Bound to totals (pandas)" in full.note()
    pdf = ppml.shell.user_ns["totals"]
    assert len(pdf) == 7 and set(pdf.columns) == {"name", "s"}


def test_load_with_as_and_key_check(ppml, spark, sales):  # noqa: F811
    ppml(f"load {sales} --header --as people")
    assert ppml.shell.user_ns["people"].columns == ["id", "name", "amount"]
    with pytest.raises(PPMLError, match=r"sales\.csv\.ppml is encrypted for key id"):
        ppml(f"load {sales} --key other-key")
    with pytest.raises(PPMLError, match="does not exist"):
        ppml("load /nonexistent/path.csv.ppml")
    with pytest.raises(MagicError, match="not a valid"):
        ppml(f"load {sales} --as 'bad name'")


def test_save_writes_encrypted_parquet(ppml, spark, sales, tmp_path):  # noqa: F811
    ppml(f"load {sales} --header --as src")
    out = tmp_path / "out"
    ppml(f"save src {out} --key {KEY_ID}")
    files = [p for p in out.iterdir() if p.name.endswith(".parquet")]
    assert files and all(p.read_bytes()[:4] == b"PARE" for p in files)
    ppml(f"load {out} --as back")
    assert ppml.shell.user_ns["back"].count() == 250
    with pytest.raises(PPMLError, match="already holds data"):
        ppml(f"save src {out} --key {KEY_ID}")
    ppml(f"save src {out} --key {KEY_ID} --mode overwrite --format csv --option header=true")
    with pytest.raises(MagicError, match="no variable"):
        ppml(f"save missing {out}")


def test_sql_errors_are_one_clear_line(ppml, spark):  # noqa: F811
    from ppml_kernel.errors import is_expected, one_line

    with pytest.raises(Exception) as info:
        ppml("sql", "SELEC nothing")
    assert is_expected(info.value)  # the dispatcher shows it as one line, not a traceback
    line = one_line(info.value)
    assert "\n" not in line and "Traceback" not in line and "PARSE_SYNTAX_ERROR" in line
    with pytest.raises(MagicError, match="empty"):
        ppml("sql", "   ")


def test_keys_list_and_import_show_ids_never_keys(ppml, tmp_path, data_key):  # noqa: F811
    kf = write_key_file(tmp_path / "team.key", "team-key")
    _, kek = read_key_file(kf)
    table = ppml(f"keys import {kf}")
    text = repr(table) + table._repr_html_() + repr(ppml.shown)
    assert "team-key" in text and KEY_ID in text
    assert kek.hex() not in text and data_key[1].hex() not in text
    with pytest.raises(MagicError, match="does not exist"):
        ppml(f"keys import {tmp_path / 'nope.key'}")


# --------------------------------------------------------------------------- real kernel


@pytest.mark.kernel
def test_magics_in_a_real_ppml_kernel(tmp_path, monkeypatch):
    from jupyter_client.manager import KernelManager
    from support.kernel_client import execute

    prefix = tmp_path / "prefix"
    subprocess.run(
        [sys.executable, "-m", "ppml_kernel.cli", "install", "--prefix", str(prefix)],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    kf = write_key_file(tmp_path / "nb.key", "nb-key")
    _, kek = read_key_file(kf)
    from ppml_kernel.keys.files import KeyFileProvider

    enc = tmp_path / "t.csv.ppml"
    with open(enc, "wb") as out:
        F.encrypt_stream(io.BytesIO(CSV.encode()), out, KeyFileProvider(kf), "nb-key")
    km = KernelManager(kernel_name="ppml")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        from ppml_kernel.channel.sealed_client import SealedKernelClient

        owner = SealedKernelClient(kc, allow_simulated=True)
        owner.attest()
        outputs = []
        for code in (
            "%load_ext ppml_kernel.magics.data",
            f"%ppml keys import {kf}",
            f"%ppml load {enc} --header --as t",
            "%%ppml sql --limit 3\nSELECT id, amount FROM t ORDER BY id",
            f"%ppml save t {tmp_path / 'saved'} --key nb-key",
            "print(t.count())",
        ):
            ex = execute(owner, code, timeout=300)
            assert ex.status == "ok", ex.text()
            outputs.append(ex.text())
        # A dataset key in the kernel switched sealed mode on: the relay's plain request
        # (kc holds only the connection file) is refused.
        refused = execute(kc, "print(t.count())")
        assert refused.reply["content"]["ename"] == "PPMLSealedSessionRequired"
        text = "\n".join(outputs)
        assert "ppml:" not in text, text
        assert "Loaded" in text and "Showing the first 3 rows" in text and "250" in text
        assert kek.hex() not in text
        saved = [p for p in (tmp_path / "saved").iterdir() if p.suffix == ".parquet"]
        assert saved and all(Path(p).read_bytes()[:4] == b"PARE" for p in saved)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
