"""Spark's own CSV reader on ppml-aead/1 files, through the JVM codec (ppml.AeadCodec).

Real local[2] Spark, the real local key broker, the jar compiled from
ppml_kernel/jvm/java. Every damaged file gets the same named error as on the Python path,
with the file Spark was reading; the session keeps working after each.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import random
from pathlib import Path

import pytest
from support.conftest_spark import KEY_ID, data_key, encrypt_to, spark  # noqa: F401

from ppml_kernel.data import codec, sparkio
from ppml_kernel.data import format as F
from ppml_kernel.errors import one_line
from ppml_kernel.keys.broker.local import local_broker
from ppml_kernel.keys.files import generate_kek
from ppml_kernel.keys.store import KeyStore, KeyStoreProvider, default_provider

pytestmark = pytest.mark.spark

SCHEMA = "id long, n int, name string, price decimal(12,2), day date, ts timestamp, ok boolean"
CHUNK = 4096


def _rows(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names = ["ann", '"with, comma"', "Zoë", "日本語", "", "x" * 50]
    out = []
    for i in range(n):
        n_val = "" if rng.random() < 0.1 else str(rng.randint(-999, 999))
        price = decimal.Decimal(rng.randint(0, 10**9)) / 100
        day = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 3000))
        ts = dt.datetime(2021, 1, 1) + dt.timedelta(seconds=rng.randint(0, 10**8))
        out.append(f"{i},{n_val},{rng.choice(names)},{price},{day},"
                   f"{ts:%Y-%m-%dT%H:%M:%S},{'true' if rng.random() < 0.5 else 'false'}")
    return out


def _csv(lines: list[str]) -> bytes:
    return ("id,n,name,price,day,ts,ok\n" + "\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def tables(tmp_path_factory, data_key):  # noqa: F811
    """The same rows as plaintext and as ppml-aead/1 CSV: three files, one of them tiny."""
    root = tmp_path_factory.mktemp("native")
    for d in ("plain", "enc"):
        (root / d).mkdir()
    parts = [_rows(3000, 1), _rows(1, 2), _rows(2500, 3)]
    for i, part in enumerate(parts):
        (root / "plain" / f"p{i}.csv").write_bytes(_csv(part))
        encrypt_to(root / "enc" / f"p{i}.csv.ppml", _csv(part))
    return root


def _sorted(df) -> list[tuple]:
    return sorted((tuple(r) for r in df.collect()), key=repr)


def test_small_encrypted_csv_is_read_by_sparks_own_reader(spark, tables):  # noqa: F811
    assert codec.native_csv_enabled(spark)
    native = sparkio.read(spark, tables / "enc", "csv", SCHEMA, header=True)
    plan = native._jdf.queryExecution().executedPlan().toString()
    assert "FileScan csv" in plan and "ArrowEvalPython" not in plan
    plain = spark.read.schema(SCHEMA).option("header", "true").csv(str(tables / "plain"))
    python_path = sparkio.read(spark, tables / "enc", "csv", SCHEMA, header=True, native=False)
    assert "ArrowEvalPython" in python_path._jdf.queryExecution().executedPlan().toString()
    expected = _sorted(plain)
    assert len(expected) == 5501
    assert _sorted(native) == expected
    assert _sorted(python_path) == expected
    assert native.count() == 5501
    got = _sorted(native.where("id = 7").select("price", "name"))
    assert got == _sorted(plain.where("id = 7").select("price", "name"))
    assert len(got) == 2 and isinstance(got[0][0], decimal.Decimal)


def test_inferred_schema_is_the_python_paths(spark, tables):  # noqa: F811
    native = sparkio.read(spark, tables / "enc", "csv", header=True)
    python_path = sparkio.read(spark, tables / "enc", "csv", header=True, native=False)
    assert native.schema == python_path.schema
    assert _sorted(native) == _sorted(python_path)


def test_jvm_unwraps_through_the_broker_once_per_file_and_audits_it(spark, tmp_path):  # noqa: F811
    positive = 0
    for i in range(3):  # fresh files: data keys no process has seen yet
        rows = _rows(50, 10 + i)
        positive += sum(1 for r in rows if r.split(",")[1] and int(r.split(",")[1]) > 0)
        encrypt_to(tmp_path / f"f{i}.csv.ppml", _csv(rows))
    broker = local_broker()
    assert broker is not None

    def unwraps() -> list:
        return [e for e in broker.audit.events() if e.ok and e.reason == "unwrap"]

    before = len(unwraps())
    df = sparkio.read(spark, tmp_path, "csv", SCHEMA, header=True)
    assert df.count() == 150
    after = unwraps()
    # one unwrap per file by the kernel's own header check (before Spark runs) and one per
    # file by the JVM's codec, both through the socket
    new = after[before:]
    assert all(e.key_ids == (KEY_ID,) for e in new)
    by = {}
    for e in new:
        by[e.executor] = by.get(e.executor, 0) + 1
    me = f"process {os.getpid()}"
    jvm_pid = spark.sparkContext._jvm.ProcessHandle.current().pid()
    assert by == {me: 3, f"process {jvm_pid}": 3}
    # read again: the JVM keeps the data keys it was given (as the Python workers do)
    assert df.where("n > 0").count() == positive > 0
    assert len(unwraps()) == len(after)


def test_python_path_kept_where_the_jvm_would_change_meaning(spark, tables, monkeypatch):  # noqa: F811
    def uses_jvm(**opts) -> bool:
        df = sparkio.read(spark, tables / "enc", "csv", SCHEMA, header=True, **opts)
        return "ArrowEvalPython" not in df._jdf.queryExecution().executedPlan().toString()

    assert uses_jvm()
    assert not uses_jvm(native=False)
    assert not uses_jvm(splitBytes=1 << 16)  # asks for chunk-range splits
    assert not uses_jvm(nullValue="NA")  # an option only the Python path maps
    # executors of an attested cluster have no local broker for the JVM to ask
    assert not codec.native_csv(["t.csv.ppml"], {"keysource": "attested"}, 10, 2)
    assert codec.native_csv(["t.csv.ppml"], {"keysource": "local"}, 10, 2)
    monkeypatch.setattr(codec, "NATIVE_CSV_MAX_BYTES_PER_CORE", 1000)
    assert not uses_jvm()  # large data: Arrow's column-wise parsing wins
    assert uses_jvm(native=True)


def test_file_without_the_suffix_stays_on_the_python_path(spark, tables, tmp_path):  # noqa: F811
    odd = tmp_path / "odd.bin"
    odd.write_bytes((tables / "enc" / "p1.csv.ppml").read_bytes())
    df = sparkio.read(spark, odd, "csv", SCHEMA, header=True)
    assert "ArrowEvalPython" in df._jdf.queryExecution().executedPlan().toString()
    assert df.count() == 1


# --------------------------------------------------------------- damaged files, raw codec


def _raw_error(spark, path: Path) -> tuple[str, str]:  # noqa: F811
    """Read ``path`` with Spark's reader alone (no driver-side check): raw text, one line."""
    with pytest.raises(Exception) as info:
        spark.read.schema(SCHEMA).option("header", "true").option("mode", "FAILFAST") \
            .csv(str(path)).collect()
    return str(info.value), one_line(info.value)


def _damaged(tables: Path, tmp_path: Path, name: str, edit) -> Path:
    data = bytearray((tables / "enc" / "p0.csv.ppml").read_bytes())
    target = tmp_path / name
    target.write_bytes(bytes(edit(data)))
    return target


def _flip(offset: int):
    def edit(data: bytearray) -> bytearray:
        data[offset] ^= 1
        return data
    return edit


STRIDE = CHUNK + F.TAG_SIZE


@pytest.mark.parametrize(("name", "edit", "kind", "words"), [
    ("chunk.csv.ppml", _flip(F.HEADER_SIZE + 3 * STRIDE + 100), "TamperedChunkError",
     "chunk 3 failed authentication"),
    ("nonce.csv.ppml", _flip(30), "HeaderTamperedError", "header was modified"),
    ("slot.csv.ppml", _flip(200), "HeaderTamperedError", "header was modified"),
    ("kcv.csv.ppml", _flip(162), "WrongKeyError", "wrong key"),
    ("cut.csv.ppml", lambda d: d[: F.HEADER_SIZE + 5 * STRIDE], "TruncatedFileError",
     "chunk 4 is authentic but is not the final chunk"),
    ("frag.csv.ppml", lambda d: d[: F.HEADER_SIZE + 5 * STRIDE + 7], "CorruptFileError",
     "a 7-byte fragment after chunk 4"),
    ("head.csv.ppml", lambda d: d[:100], "TruncatedFileError", "header is incomplete"),
    ("plain.csv.ppml", lambda d: bytearray(b"id,n\n1,2\n"), "NotEncryptedError",
     "not a ppml-aead/1 file"),
    ("swap.csv.ppml", lambda d: d[:F.HEADER_SIZE] + d[F.HEADER_SIZE + STRIDE:F.HEADER_SIZE
                                                        + 2 * STRIDE]
     + d[F.HEADER_SIZE:F.HEADER_SIZE + STRIDE] + d[F.HEADER_SIZE + 2 * STRIDE:],
     "TamperedChunkError", "chunk 0 failed authentication"),
])
def test_damaged_file_names_file_and_fault(spark, tables, tmp_path, name, edit, kind,  # noqa: F811
                                           words):
    path = _damaged(tables, tmp_path, name, edit)
    raw, line = _raw_error(spark, path)
    assert f"ppml.AeadFileError: {kind}: " in raw
    assert line.startswith(f"{path}: ") and words in line, line
    assert "\n" not in line and "Exception" not in line
    assert spark.range(3).count() == 3  # the session is fine


def test_extended_file(spark, tmp_path):  # noqa: F811
    # exactly two full chunks: the final chunk is a whole stride, then more data follows
    path = encrypt_to(tmp_path / "x.csv.ppml", b"a\n" + b"1" * (2 * CHUNK - 3) + b"\n")
    data = path.read_bytes()
    assert len(data) == F.HEADER_SIZE + 2 * STRIDE
    ext = tmp_path / "ext.csv.ppml"
    ext.write_bytes(data + data[F.HEADER_SIZE:F.HEADER_SIZE + STRIDE])
    with pytest.raises(Exception) as info:
        spark.read.text(str(ext)).collect()
    assert "ExtendedFileError" in str(info.value)
    assert one_line(info.value) == (
        f"{ext}: extended: chunk 1 is the authentic final chunk but more data follows it")
    assert spark.read.text(str(path)).count() == 2  # the intact file reads


def test_wrong_and_unknown_key_in_the_jvm(spark, tmp_path):  # noqa: F811
    other = KeyStore()
    other.put(KEY_ID, generate_kek())
    other.put("nobody-has-this", generate_kek())
    wrong = encrypt_to(tmp_path / "wrong.csv.ppml", b"a\n1\n", KEY_ID, KeyStoreProvider(other))
    unknown = encrypt_to(tmp_path / "unknown.csv.ppml", b"a\n1\n", "nobody-has-this",
                         KeyStoreProvider(other))
    _, line = _raw_error(spark, wrong)
    assert line == (f"{wrong}: wrong key: the key available as '{KEY_ID}' is not the key this "
                    "file was encrypted with (key check value differs)")
    _, line = _raw_error(spark, unknown)
    assert line.startswith(f"{unknown}: no key with key id 'nobody-has-this' is available")
    # through sparkio.read the driver refuses before Spark starts, as typed errors
    with pytest.raises(F.WrongKeyError, match=r"wrong\.csv\.ppml"):
        sparkio.read(spark, wrong, "csv", "a int", header=True)
    with pytest.raises(F.UnknownKeyError, match="nobody-has-this"):
        sparkio.read(spark, unknown, "csv", "a int", header=True)


def test_the_codec_never_writes(spark, tmp_path):  # noqa: F811
    with pytest.raises(Exception) as info:
        spark.range(3).write.option("compression", codec.CODEC_CLASS).csv(str(tmp_path / "o"))
    assert "only reads ppml-aead/1 files" in str(info.value)
    leftovers = [p for p in (tmp_path / "o").rglob("*") if p.is_file()
                 and not p.name.startswith((".", "_"))] if (tmp_path / "o").exists() else []
    assert not [p for p in leftovers if os.path.getsize(p)]


# ------------------------------------------------------ the stream itself, through py4j


def _java_stream(spark, data: bytes):  # noqa: F811
    jvm = spark._jvm
    codec_obj = jvm.ppml.AeadCodec()
    codec_obj.setConf(spark._jsc.hadoopConfiguration())
    return codec_obj.createInputStream(jvm.java.io.ByteArrayInputStream(data))


def _read_exactly(spark, stream, n: int) -> bytes:  # noqa: F811
    return bytes(spark._jvm.org.apache.commons.io.IOUtils.toByteArray(stream, n))


def test_stream_returns_exactly_the_authentic_chunks_then_stays_broken(spark, tables):  # noqa: F811
    from py4j.protocol import Py4JJavaError

    src = (tables / "enc" / "p0.csv.ppml").read_bytes()
    with open(tables / "enc" / "p0.csv.ppml", "rb") as fh:
        plaintext = b"".join(bytes(c) for c in F.iter_plaintext(fh, default_provider(), "p0"))
    assert _read_exactly(spark, _java_stream(spark, src), len(plaintext)) == plaintext

    bad = bytearray(src)
    bad[F.HEADER_SIZE + 3 * STRIDE + 9] ^= 0x80
    stream = _java_stream(spark, bytes(bad))
    # chunks 0-2 are authentic and readable; not one byte of chunk 3 or later comes out
    assert _read_exactly(spark, stream, 3 * CHUNK) == plaintext[: 3 * CHUNK]
    with pytest.raises(Py4JJavaError) as info:
        stream.read()
    assert "TamperedChunkError: chunk 3 failed authentication" in str(info.value.java_exception)
    with pytest.raises(Py4JJavaError, match="chunk 3 failed authentication"):
        stream.read()  # a caller that swallows the error gets it again, never bytes
    stream.close()
    with pytest.raises(Py4JJavaError, match="stream is closed"):
        stream.read()
