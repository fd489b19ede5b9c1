"""All 22 TPC-H queries return exactly the plaintext rows over encrypted data.

The data is generated here with tpchgen-cli at a small scale factor and encrypted as
the data owner would (``ppml-kernel encrypt`` for CSV, Parquet Modular Encryption for
Parquet), then every query runs on the plaintext CSV and on four encrypted sides: both
formats, each through ``sparkio.read`` (the ``%ppml load`` path) and through
``spark.read.format("ppml")``. Rows are compared as lists, so decimals must be equal
exactly and the order must be the query's order. (The plaintext Parquet copy is the
benchmark's baseline; that its types equal the CSV schema is checked once below.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support.conftest_spark import data_key, spark  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import tpch

pytestmark = pytest.mark.spark
SF = 0.01
# csv-ppml is sparkio.read as users call it (at this size: Spark's CSV reader through the
# JVM codec); csv-py is its Python path (native=False), the one larger tables take
ENCRYPTED = ("csv-ppml", "csv-py", "csv-ds", "pq-ppml", "pq-ds")


@pytest.fixture(scope="module")
def tpch_data(tmp_path_factory, spark):  # noqa: F811
    from ppml_kernel.keys.store import import_key_file

    work = tmp_path_factory.mktemp("tpch")
    key_file = tpch.key_file(work)
    roots = tpch.prepare(work, SF, key_file, parts=2, log=lambda _m: None)
    import_key_file(key_file)  # the analyst's kernel holds the key; executors ask the broker
    sides = {s: tpch.load_side(spark, s, roots) for s in ("csv-plain", "pq-plain", *ENCRYPTED)}
    return roots, sides


def test_encrypted_files_are_not_plaintext(tpch_data):
    """The encrypted copies really are encrypted (ppml-aead and PME magic), every part."""
    from ppml_kernel.data.format import MAGIC
    from ppml_kernel.data.sniff import PME_MAGIC

    roots, _ = tpch_data
    for table in tpch.TABLES:
        csvs = sorted((roots["enc_csv"] / table).glob("*.ppml"))
        pqs = sorted((roots["enc_pq"] / table).glob("*.parquet"))
        assert csvs and len(csvs) == len(pqs), table
        assert all(p.read_bytes()[: len(MAGIC)] == MAGIC for p in csvs)
        assert all(p.read_bytes()[:4] == PME_MAGIC for p in pqs)


def test_all_sides_have_the_specified_schema(tpch_data):
    _, sides = tpch_data
    for table in tpch.TABLES:
        want = sides["csv-plain"][table].schema.simpleString()
        for side, tables in sides.items():
            got = tables[table].schema.simpleString()
            assert got == want, (side, table)


def test_both_csv_paths_are_the_ones_compared(tpch_data):
    """csv-ppml reads through Spark's CSV reader and the codec, csv-py through Python."""
    _, sides = tpch_data
    for table in tpch.TABLES:
        native = sides["csv-ppml"][table]._jdf.queryExecution().executedPlan().toString()
        python = sides["csv-py"][table]._jdf.queryExecution().executedPlan().toString()
        assert "FileScan csv" in native and "ArrowEvalPython" not in native, table
        assert "ArrowEvalPython" in python, table


@pytest.mark.parametrize("n", range(1, 23), ids=lambda n: f"q{n}")
def test_query_encrypted_equals_plaintext(n, tpch_data, spark):  # noqa: F811
    _, sides = tpch_data
    sql = tpch.queries()[n]
    want = tpch.run_query(spark, sides["csv-plain"], sql)
    assert want, f"q{n} returned no rows at SF {SF}: the comparison would prove nothing"
    for side in ENCRYPTED:
        got = tpch.run_query(spark, sides[side], sql)
        assert got == want, f"q{n} on {side}: {len(got)} rows differ from plaintext"
