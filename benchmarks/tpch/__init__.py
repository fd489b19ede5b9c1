"""TPC-H on encrypted data: generate, encrypt as the data owner would, load, query.

Shared by ``benchmarks/bench_tpch.py`` and ``tests/spark/test_tpch.py`` so the benchmark and
the test run exactly the same data preparation and the same 22 queries (``q1.sql`` ..
``q22.sql`` next to this file, written from the TPC-H specification with the
validation-run substitution parameters).

Data: ``tpchgen-cli`` writes each table as CSV (with a header line) and as Parquet. The
data owner then encrypts

* the CSV files with ``ppml-kernel encrypt`` (ppml-aead/1, one file per part), and
* the Parquet files with Parquet Modular Encryption (``data.parquet.write_parquet``);
  the plaintext Parquet copy is written by the same pyarrow writer with the same row
  groups and compression, so the two Parquet sides differ only in encryption.

Sides (how a table becomes a DataFrame):

``csv-plain``  ``spark.read.csv`` on the plaintext CSV, same schema
``csv-ppml``   ``sparkio.read`` on the encrypted CSV (what ``%ppml load`` does)
``csv-ds``     ``spark.read.format("ppml")`` on the encrypted CSV
``pq-plain``   ``spark.read.parquet`` on the plaintext Parquet
``pq-ppml``    ``sparkio.read`` on the PME Parquet (Spark's own reader, broker KMS client)
``pq-ds``      ``spark.read.format("ppml")`` on the PME Parquet (pyarrow on executors)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
KEY_ID = "tpch"

# Column types as in the specification: identifiers bigint, money and quantities
# decimal(15,2) (exact), dates as dates. tpchgen-cli's Parquet has the same types.
TABLES: dict[str, str] = {
    "region": "r_regionkey bigint, r_name string, r_comment string",
    "nation": "n_nationkey bigint, n_name string, n_regionkey bigint, n_comment string",
    "supplier": "s_suppkey bigint, s_name string, s_address string, s_nationkey bigint, "
                "s_phone string, s_acctbal decimal(15,2), s_comment string",
    "customer": "c_custkey bigint, c_name string, c_address string, c_nationkey bigint, "
                "c_phone string, c_acctbal decimal(15,2), c_mktsegment string, "
                "c_comment string",
    "part": "p_partkey bigint, p_name string, p_mfgr string, p_brand string, p_type string, "
            "p_size int, p_container string, p_retailprice decimal(15,2), p_comment string",
    "partsupp": "ps_partkey bigint, ps_suppkey bigint, ps_availqty int, "
                "ps_supplycost decimal(15,2), ps_comment string",
    "orders": "o_orderkey bigint, o_custkey bigint, o_orderstatus string, "
              "o_totalprice decimal(15,2), o_orderdate date, o_orderpriority string, "
              "o_clerk string, o_shippriority int, o_comment string",
    "lineitem": "l_orderkey bigint, l_partkey bigint, l_suppkey bigint, l_linenumber int, "
                "l_quantity decimal(15,2), l_extendedprice decimal(15,2), "
                "l_discount decimal(15,2), l_tax decimal(15,2), l_returnflag string, "
                "l_linestatus string, l_shipdate date, l_commitdate date, "
                "l_receiptdate date, l_shipinstruct string, l_shipmode string, "
                "l_comment string",
}
SIDES = ("csv-plain", "csv-ppml", "csv-py", "csv-ds", "pq-plain", "pq-ppml", "pq-ds")


def queries() -> dict[int, str]:
    """The 22 queries by number, as Spark SQL text."""
    out = {}
    for n in range(1, 23):
        out[n] = (HERE / f"q{n}.sql").read_text()
    return out


def tpchgen() -> str:
    """Path of ``tpchgen-cli`` (next to this interpreter, or on PATH)."""
    local = Path(sys.executable).with_name("tpchgen-cli")
    found = str(local) if local.exists() else shutil.which("tpchgen-cli")
    if not found:
        raise SystemExit("tpchgen-cli is not installed (pip install tpchgen-cli, or the "
                         "'bench' extra)")
    return found


def parts_for(sf: float) -> int:
    """Files per large table: about 64 MB of CSV lineitem per part, at least 2."""
    return max(2, round(sf * 12))


def _generate(fmt: str, sf: float, out: Path, parts: int) -> None:
    cmd = [tpchgen(), fmt, "-s", str(sf), "-o", str(out), "--parts", str(parts), "-q"]
    subprocess.run(cmd, check=True)


def _table_files(root: Path, table: str, suffix: str) -> list[Path]:
    """A table's part files: ``root/table/table.N.suffix`` (or ``root/table.suffix``)."""
    d = root / table
    if d.is_dir():
        return sorted(d.glob(f"*.{suffix}"))
    return [root / f"{table}.{suffix}"]


def prepare(work: Path, sf: float, key_file: Path, parts: int | None = None,
            formats: Iterable[str] = ("csv", "parquet"),
            log: Callable[[str], None] = print) -> dict[str, Path]:
    """Generate the tables at ``sf`` and encrypt them under the key in ``key_file``.

    Returns the roots ``plain_csv``, ``enc_csv``, ``plain_pq``, ``enc_pq``; each holds one
    directory per table.
    """
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ppml_kernel.cli import main as cli
    from ppml_kernel.data.parquet import write_parquet
    from ppml_kernel.keys.files import KeyFileProvider

    parts = parts or parts_for(sf)
    roots = {k: work / k for k in ("plain_csv", "enc_csv", "plain_pq", "enc_pq", "gen_pq")}
    formats = set(formats)
    if "csv" in formats:
        t = time.perf_counter()
        _generate("csv", sf, roots["plain_csv"], parts)
        log(f"tpchgen-cli csv -s {sf} --parts {parts}: {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        if cli(["encrypt", str(roots["plain_csv"]), "-o", str(roots["enc_csv"]),
                "--key-file", str(key_file)]) != 0:
            raise SystemExit("ppml-kernel encrypt failed")
        log(f"ppml-kernel encrypt (ppml-aead/1 CSV): {time.perf_counter() - t:.1f} s")
    if "parquet" in formats:
        t = time.perf_counter()
        _generate("parquet", sf, roots["gen_pq"], parts)
        provider = KeyFileProvider(key_file)
        for table in TABLES:
            for side in ("plain_pq", "enc_pq"):
                (roots[side] / table).mkdir(parents=True, exist_ok=True)
            for src in _table_files(roots["gen_pq"], table, "parquet"):
                data = pq.read_table(src)
                # tpchgen-cli writes string_view; plain strings for both copies.
                data = data.cast(pa.schema([
                    pa.field(f.name, pa.string() if f.type == pa.string_view() else f.type,
                             nullable=True) for f in data.schema]))
                pq.write_table(data, roots["plain_pq"] / table / src.name,
                               compression="snappy", row_group_size=1 << 20)
                write_parquet(data, str(roots["enc_pq"] / table / src.name), provider,
                              KEY_ID, row_group_rows=1 << 20)
        shutil.rmtree(roots["gen_pq"])
        log(f"tpchgen-cli parquet + PME encryption: {time.perf_counter() - t:.1f} s")
    return roots


def load_side(spark: Any, side: str, roots: dict[str, Path]) -> dict[str, Any]:
    """Each table as a DataFrame the way ``side`` reads it (see the module docstring)."""
    from ppml_kernel.data import sparkio

    out = {}
    for table, ddl in TABLES.items():
        if side == "csv-plain":
            df = spark.read.schema(ddl).option("header", "true").csv(
                str(roots["plain_csv"] / table))
        elif side == "csv-ppml":
            df = sparkio.read(spark, roots["enc_csv"] / table, "csv", ddl, header=True)
        elif side == "csv-py":  # the Python path only (no JVM codec)
            df = sparkio.read(spark, roots["enc_csv"] / table, "csv", ddl, header=True,
                              native=False)
        elif side == "csv-ds":
            df = (spark.read.format("ppml").schema(ddl).option("format", "csv")
                  .option("header", "true").load(str(roots["enc_csv"] / table)))
        elif side == "pq-plain":
            df = spark.read.parquet(str(roots["plain_pq"] / table))
        elif side == "pq-ppml":
            df = sparkio.read(spark, roots["enc_pq"] / table, "parquet")
        elif side == "pq-ds":
            df = (spark.read.format("ppml").schema(ddl).option("format", "parquet")
                  .load(str(roots["enc_pq"] / table)))
        else:
            raise ValueError(f"unknown side {side!r}; one of {', '.join(SIDES)}")
        out[table] = df
    return out


def run_query(spark: Any, tables: dict[str, Any], sql: str) -> list[tuple]:
    """Bind ``tables`` to the TPC-H table names and run ``sql``; rows in query order."""
    for name, df in tables.items():
        df.createOrReplaceTempView(name)
    return [tuple(r) for r in spark.sql(sql).collect()]


def key_file(work: Path) -> Path:
    """A fresh key file for the data owner (mode 0600), made once per directory."""
    from ppml_kernel.keys.files import write_key_file

    path = work / "tpch.key"
    if not path.exists():
        write_key_file(path, KEY_ID)
    os.chmod(path, 0o600)
    return path
