"""The ppml data source on real Spark (local[2]): results identical to plaintext, keys safe."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import json
import os
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.conftest_spark import KEY_ID, data_key, encrypt_to, spark  # noqa: F401
from support.foreign_peer import ask_as_foreign_process

from ppml_kernel.data import format as F
from ppml_kernel.data import sparkio
from ppml_kernel.data.parquet import write_parquet
from ppml_kernel.keys.files import generate_kek, write_key_file
from ppml_kernel.keys.store import default_provider

pytestmark = pytest.mark.spark

SCHEMA = (
    "id long, n int, name string, score double, price decimal(10,2), day date, "
    "ts timestamp, flag boolean"
)
N_ROWS = 4000
CHUNK = 4096


def make_rows(n: int = N_ROWS, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    names = ["ann", "bob", "Zoë", "with, comma", "日本語", "x" * 40]
    rows = []
    for i in range(n):
        rows.append(
            {
                "id": i * 1_000_003,
                "n": rng.randint(-1000, 1000) if rng.random() > 0.05 else None,
                "name": rng.choice(names) if rng.random() > 0.05 else None,
                "score": round(rng.uniform(-1e4, 1e4), 4) if rng.random() > 0.05 else None,
                "price": decimal.Decimal(rng.randint(0, 10**8)) / 100
                if rng.random() > 0.05
                else None,
                "day": dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 2000)),
                "ts": dt.datetime(2021, 6, 1, 12) + dt.timedelta(seconds=rng.randint(0, 10**8)),
                "flag": rng.random() > 0.5,
            }
        )
    return rows


def _csv_field(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%dT%H:%M:%S")
    s = str(v)
    return f'"{s}"' if "," in s else s


def csv_text(rows: list[dict], header: bool = True) -> bytes:
    cols = list(rows[0])
    lines = [",".join(cols)] if header else []
    lines += [",".join(_csv_field(r[c]) for c in cols) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def json_text(rows: list[dict]) -> bytes:
    def enc(v: object) -> object:
        if isinstance(v, dt.datetime):
            return v.strftime("%Y-%m-%dT%H:%M:%S")
        if isinstance(v, dt.date):
            return v.isoformat()
        if isinstance(v, decimal.Decimal):
            return float(v)
        return v

    return (
        "\n".join(
            json.dumps({k: enc(v) for k, v in r.items() if v is not None}, ensure_ascii=False)
            for r in rows
        )
        + "\n"
    ).encode()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, data_key):  # noqa: F811
    """Plaintext and encrypted copies of the same rows in every format (several files)."""
    root = tmp_path_factory.mktemp("ds")
    rows = make_rows()
    parts = [rows[:1500], rows[1500:1501], rows[1501:]]
    for d in ("plain-csv", "enc-csv", "plain-json", "enc-json", "plain-text", "enc-text"):
        (root / d).mkdir()
    for i, part in enumerate(parts):
        (root / "plain-csv" / f"p{i}.csv").write_bytes(csv_text(part))
        encrypt_to(root / "enc-csv" / f"p{i}.csv.ppml", csv_text(part))
        (root / "plain-json" / f"p{i}.json").write_bytes(json_text(part))
        encrypt_to(root / "enc-json" / f"p{i}.json.ppml", json_text(part))
    text = "\n".join(
        [
            "first line",
            "",
            "ünïcödé",
            "  spaced  ",
            "tab\tinside",
            *[f"line {i}" for i in range(3000)],
            "last without newline",
        ]
    ).encode()
    (root / "plain-text" / "t.txt").write_bytes(text)
    encrypt_to(root / "enc-text" / "t.txt.ppml", text)
    table = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("id", pa.int64()),
                ("n", pa.int32()),
                ("name", pa.string()),
                ("score", pa.float64()),
                ("price", pa.decimal128(10, 2)),
                ("day", pa.date32()),
                ("ts", pa.timestamp("us", tz="UTC")),
                ("flag", pa.bool_()),
            ]
        ),
    )
    (root / "plain-pq").mkdir()
    (root / "pme-pq").mkdir()
    (root / "aead-pq").mkdir()
    pq.write_table(table, root / "plain-pq" / "a.parquet", row_group_size=700)
    write_parquet(
        table, str(root / "pme-pq" / "a.parquet"), default_provider(), KEY_ID, row_group_rows=700
    )
    encrypt_to(root / "aead-pq" / "a.parquet.ppml", (root / "plain-pq" / "a.parquet").read_bytes())
    return root


def rows_of(df) -> list[tuple]:
    return sorted((tuple(r) for r in df.collect()), key=repr)


@pytest.mark.parametrize("split", [5 * CHUNK, 1 << 20])
def test_csv_identical_to_plaintext(spark, dataset, split):  # noqa: F811
    plain = spark.read.schema(SCHEMA).option("header", "true").csv(str(dataset / "plain-csv"))
    expected = rows_of(plain)
    late = sparkio.read(spark, dataset / "enc-csv", "csv", SCHEMA, header=True, splitBytes=split)
    ds = (
        spark.read.format("ppml")
        .schema(SCHEMA)
        .option("format", "csv")
        .option("header", "true")
        .option("splitBytes", str(split))
        .load(str(dataset / "enc-csv"))
    )
    assert late.rdd.getNumPartitions() >= (10 if split < 1 << 20 else 1)
    assert rows_of(late) == expected
    assert rows_of(ds) == expected
    assert late.count() == ds.count() == plain.count() == N_ROWS


@pytest.mark.parametrize("split", [5 * CHUNK, 1 << 20])
def test_json_identical_to_plaintext(spark, dataset, split):  # noqa: F811
    plain = spark.read.schema(SCHEMA).json(str(dataset / "plain-json"))
    late = sparkio.read(spark, dataset / "enc-json", "json", SCHEMA, splitBytes=split)
    ds = (
        spark.read.format("ppml")
        .schema(SCHEMA)
        .option("format", "json")
        .option("splitBytes", str(split))
        .load(str(dataset / "enc-json"))
    )
    expected = rows_of(plain)
    assert rows_of(late) == expected == rows_of(ds)
    assert late.count() == N_ROWS


@pytest.mark.parametrize("split", [5 * CHUNK, 1 << 20])
def test_text_identical_to_plaintext(spark, dataset, split):  # noqa: F811
    plain = spark.read.text(str(dataset / "plain-text"))
    late = sparkio.read(spark, dataset / "enc-text", "text", splitBytes=split)
    ds = (
        spark.read.format("ppml")
        .option("format", "text")
        .option("splitBytes", str(split))
        .load(str(dataset / "enc-text"))
    )
    assert late.columns == ["value"]
    assert rows_of(late) == rows_of(plain) == rows_of(ds)
    assert late.count() == plain.count()


@pytest.mark.parametrize("flavour", ["pme-pq", "aead-pq"])
@pytest.mark.parametrize("split_rows", [700, 10**6])
def test_parquet_identical_to_plaintext(spark, dataset, flavour, split_rows):  # noqa: F811
    plain = spark.read.parquet(str(dataset / "plain-pq"))
    late = sparkio.read(spark, dataset / flavour, "parquet", splitRows=split_rows)
    ds = (
        spark.read.format("ppml")
        .option("format", "parquet")
        .option("splitRows", str(split_rows))
        .load(str(dataset / flavour))
    )
    assert late.schema == plain.schema
    assert rows_of(late) == rows_of(plain) == rows_of(ds)
    assert late.count() == N_ROWS


def test_spark_prunes_columns_and_count_parses_nothing(spark, dataset):  # noqa: F811
    from pyspark.sql import functions as Fn

    # the Python path (small data takes Spark's own CSV reader: test_native_csv.py)
    late = sparkio.read(spark, dataset / "enc-csv", "csv", SCHEMA, header=True, native=False)
    count_qe = late.groupBy().count()._jdf.queryExecution()
    assert "ArrowEvalPython" not in count_qe.executedPlan().toString()
    assert "ppml_id(" not in count_qe.optimizedPlan().toString()
    sum_plan = late.agg(Fn.sum("score"))._jdf.queryExecution().optimizedPlan().toString()
    assert "ppml_score(" in sum_plan and "ppml_name(" not in sum_plan
    total = late.agg(Fn.sum("score")).collect()[0][0]
    plain = spark.read.schema(SCHEMA).option("header", "true").csv(str(dataset / "plain-csv"))
    assert total == pytest.approx(plain.agg(Fn.sum("score")).collect()[0][0])
    # filters, SQL views and joins over the pruned DataFrame
    late.createOrReplaceTempView("enc_people")
    got = spark.sql("SELECT name, count(*) c FROM enc_people WHERE flag GROUP BY name").collect()
    plain.createOrReplaceTempView("plain_people")
    want = spark.sql("SELECT name, count(*) c FROM plain_people WHERE flag GROUP BY name")
    assert sorted(map(tuple, got), key=repr) == sorted(map(tuple, want.collect()), key=repr)
    joined = late.alias("a").join(late.alias("b"), "id").count()
    assert joined == N_ROWS
    assert late.limit(5).count() == 5
    assert late.coalesce(1).where("n > 0").count() == plain.where("n > 0").count()


def test_schema_inference(spark, dataset):  # noqa: F811
    df = sparkio.read(spark, dataset / "enc-csv", "csv", header=True)
    assert df.columns == ["id", "n", "name", "score", "price", "day", "ts", "flag"]
    assert df.count() == N_ROWS
    ds = (
        spark.read.format("ppml")
        .option("format", "csv")
        .option("header", "true")
        .load(str(dataset / "enc-csv"))
    )
    assert ds.columns == df.columns


def _error_text(excinfo) -> str:
    return str(excinfo.value)


def test_wrong_and_missing_key_on_executors(spark, tmp_path):  # noqa: F811
    from ppml_kernel.keys.store import KeyStore, KeyStoreProvider

    other = KeyStore()
    other.put(KEY_ID, generate_kek())  # same key id, different key
    other.put("missing-key", generate_kek())
    wrong = encrypt_to(
        tmp_path / "wrong.csv.ppml", b"a,b\n1,2\n", KEY_ID, KeyStoreProvider(other)
    )
    missing = encrypt_to(
        tmp_path / "missing.csv.ppml", b"a,b\n1,2\n", "missing-key", KeyStoreProvider(other)
    )
    with pytest.raises(Exception) as info:
        # the Python path's executors (the JVM path refuses in the driver: test_native_csv)
        sparkio.read(spark, wrong, "csv", "a int, b int", native=False).collect()
    text = _error_text(info)
    assert "WrongKeyError" in text and "wrong.csv.ppml" in text and KEY_ID in text
    with pytest.raises(Exception) as info:
        spark.read.format("ppml").schema("a int, b int").load(str(missing)).collect()
    text = _error_text(info)
    assert "UnknownKeyError" in text and "missing.csv.ppml" in text and "missing-key" in text


def test_tampered_chunk_fails_the_query_naming_file_and_chunk(spark, dataset, tmp_path):  # noqa: F811
    src = dataset / "enc-csv" / "p0.csv.ppml"
    bad = bytearray(src.read_bytes())
    bad[F.HEADER_SIZE + 3 * (CHUNK + 16) + 100] ^= 1
    target = tmp_path / "bad.csv.ppml"
    target.write_bytes(bytes(bad))
    with pytest.raises(Exception) as info:
        sparkio.read(spark, target, "csv", SCHEMA, header=True).count()
    text = _error_text(info)
    assert "TamperedChunkError" in text and "bad.csv.ppml" in text and "chunk 3" in text


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_write_and_read_back(spark, dataset, tmp_path, fmt):  # noqa: F811
    src = sparkio.read(spark, dataset / "enc-csv", "csv", SCHEMA, header=True)
    out = tmp_path / f"out-{fmt}"
    src.repartition(3).write.format("ppml").option("format", fmt).option("key", KEY_ID).option(
        "header", "true"
    ).mode("overwrite").save(str(out))
    files = sorted(p for p in out.iterdir() if not p.name.startswith(("_", ".")))
    assert len(files) == 3 and (out / "_SUCCESS").exists()
    for f in files:
        raw = f.read_bytes()
        assert raw.startswith(b"PARE" if fmt == "parquet" else F.MAGIC)
        assert b"with, comma" not in raw and "Zoë".encode() not in raw
    back = sparkio.read(spark, out, fmt, SCHEMA, header=True)
    assert rows_of(back) == rows_of(src)


def test_write_text_and_modes(spark, dataset, tmp_path):  # noqa: F811
    lines = sparkio.read(spark, dataset / "enc-text", "text")
    out = tmp_path / "text-out"
    sparkio.write(lines, out, KEY_ID, "text")
    assert rows_of(sparkio.read(spark, out, "text")) == rows_of(lines)
    with pytest.raises(Exception, match="already holds data"):
        sparkio.write(lines, out, KEY_ID, "text")
    sparkio.write(lines, out, KEY_ID, "text", mode="append")
    assert sparkio.read(spark, out, "text").count() == 2 * lines.count()
    sparkio.write(lines.limit(3), out, KEY_ID, "text", mode="overwrite")
    assert sparkio.read(spark, out, "text").count() == 3


def test_key_file_key_source(spark, tmp_path):  # noqa: F811
    from ppml_kernel.keys.files import KeyFileProvider

    kf = write_key_file(tmp_path / "owner.key", "owner-key")
    path = encrypt_to(tmp_path / "x.csv.ppml", b"1,a\n2,b\n", "owner-key", KeyFileProvider(kf))
    df = (
        spark.read.format("ppml")
        .schema("i int, s string")
        .option("keysource", "keyfile")
        .option("keyfile", str(kf))
        .load(str(path))
    )
    assert sorted(map(tuple, df.collect())) == [(1, "a"), (2, "b")]


def test_keys_never_reach_plans_conf_env_or_command_lines(spark, dataset, data_key):  # noqa: F811
    _, kek = data_key
    forms = [kek.hex(), base64.b64encode(kek).decode(), kek.hex().upper()]
    df = sparkio.read(spark, dataset / "enc-csv", "csv", SCHEMA, header=True)
    df.count()
    df.write.format("noop").mode("overwrite").save()
    qe = df._jdf.queryExecution()
    texts = [qe.toString(), str(spark.sparkContext.getConf().getAll()), repr(dict(os.environ))]
    jvm_pid = int(spark.sparkContext._jvm.ProcessHandle.current().pid())
    for proc in [jvm_pid, *_children(jvm_pid)]:
        for name in ("cmdline", "environ"):
            with contextlib.suppress(OSError):
                texts.append(Path(f"/proc/{proc}/{name}").read_bytes().decode("latin-1"))
    for text in texts:
        for form in forms:
            assert form not in text


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                out.append(int(p.name))
    return out


def test_broker_refuses_processes_the_kernel_did_not_start(spark):  # noqa: F811
    from ppml_kernel.keys.broker.local import local_broker

    broker = local_broker()
    assert broker is not None
    reply = ask_as_foreign_process(broker.path, Path(broker.path).parent / "probe-out")
    assert reply["ok"] is False and reply["error"] == "denied"
    assert "not started by the kernel" in reply["message"]


def test_native_pme_parquet_both_ways(spark, dataset, tmp_path):  # noqa: F811
    """Spark's own Parquet reader/writer with the broker KMS client, and pyarrow in between."""
    from ppml_kernel.data.pandas_io import read_table
    from ppml_kernel.keys.pme.names import native_pme_enabled

    assert native_pme_enabled(spark), "javac is on PATH here: the KMS client jar must build"
    df = sparkio.read(spark, dataset / "pme-pq", "parquet")  # written by pyarrow
    plan = df._jdf.queryExecution().executedPlan().toString()
    assert "FileScan parquet" in plan and "ArrowEvalPython" not in plan
    plain = spark.read.parquet(str(dataset / "plain-pq"))
    assert rows_of(df) == rows_of(plain)
    out = tmp_path / "spark-pme"
    sparkio.write(df, out, KEY_ID, "parquet")
    files = sorted(out.glob("*.parquet"))
    assert files and all(f.read_bytes()[:4] == b"PARE" for f in files)
    back = read_table(out, "parquet")  # pyarrow reads what Spark wrote
    assert back.num_rows == N_ROWS
    assert sorted(back.column("id").to_pylist()) == sorted(r.id for r in plain.collect())
    with pytest.raises(Exception, match=r"a\.parquet.*no key with key id 'nobody'"):
        from ppml_kernel.keys.store import KeyStore, KeyStoreProvider

        store = KeyStore()
        store.put("nobody", generate_kek())
        (tmp_path / "nk").mkdir()
        write_parquet(
            pa.table({"x": [1, 2]}),
            str(tmp_path / "nk" / "a.parquet"),
            KeyStoreProvider(store),
            "nobody",
        )
        sparkio.read(spark, tmp_path / "nk", "parquet").count()


def test_shuffled_rows_are_never_on_disk_in_the_clear(spark):  # noqa: F811
    """Local sessions encrypt shuffle files and spills (decrypted rows must not reach disk)."""
    import time
    import uuid

    assert spark.conf.get("spark.io.encryption.enabled") == "true"
    started = time.time() - 1
    marker = f"ppml-shuffle-marker-{uuid.uuid4().hex}"
    df = spark.createDataFrame([(i, f"{marker}-{i}") for i in range(2000)], "i int, s string")
    assert df.repartition(3).count() == 2000
    rows = df.repartition(3, "i").collect()
    assert len(rows) == 2000
    utils = spark.sparkContext._jvm.org.apache.spark.util.Utils
    roots = utils.getConfiguredLocalDirs(spark.sparkContext._jsc.sc().conf())
    seen = []
    for f in (f for root in roots for f in Path(root).glob("blockmgr-*/**/*")):
        try:  # Spark's cleaner (ours, or another session's) may delete files meanwhile
            if not f.is_file():
                continue
            mtime, data = f.stat().st_mtime, f.read_bytes()
        except FileNotFoundError:
            continue
        seen.append((f, mtime))
        assert marker.encode() not in data, f"{f} holds shuffled rows in the clear"
    assert any(f.name.startswith("shuffle_") and mtime >= started for f, mtime in seen), (
        "no shuffle file was written")
