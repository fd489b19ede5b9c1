"""Splitting encrypted line files: ownership of records, fast counting, parsing, planning."""

from __future__ import annotations

import io
import itertools
import os
import random

import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from ppml_kernel.data import format as F
from ppml_kernel.data.files import Segment, file_info, list_files, plan_splits
from ppml_kernel.data.records import count_lines, owned_span
from ppml_kernel.data.tabular import (
    TableSpec,
    count_segment,
    infer_schema,
    lines_array,
    read_segment,
)
from ppml_kernel.keys.files import generate_kek
from ppml_kernel.keys.store import KeyStore, KeyStoreProvider

CS = 4096


@pytest.fixture
def provider() -> KeyStoreProvider:
    s = KeyStore()
    s.put("k1", generate_kek())
    return KeyStoreProvider(s)


def encrypted(tmp_path, name, data: bytes, provider, cs=CS):
    p = tmp_path / name
    with open(p, "wb") as out:
        F.encrypt_stream(io.BytesIO(data), out, provider, "k1", cs)
    return p


TRICKY = [
    b"",
    b"a\n",
    b"a",
    b"\n",
    b"\n\n\n",
    b"a\n\nb\n",
    b"a\r\nb\r\n\r\nc",
    b"\r\n\r\n",
    b"x\n" * 5000,
    b"line without end" * 700,
    (b"short\n" + b"y" * 9000 + b"\n") * 3,  # records longer than a chunk
    b"a\n\r\n\nb\n\n",
    b"a" * 4094 + b"\n\r\nb\n",  # an empty CRLF line across a chunk boundary
    b"a" * 4095 + b"\n\nb\n",  # an empty line right after a chunk boundary
    b"a" * 4095 + b"\r\n\r\n",  # CRLF at the boundary, then an empty CRLF line
    b"\r\n" * 5000,
]


@pytest.mark.parametrize("data", TRICKY, ids=range(len(TRICKY)))
def test_splits_own_every_record_exactly_once(tmp_path, provider, data):
    path = encrypted(tmp_path, "d.ppml", data, provider)
    rng = random.Random(len(data))
    with F.EncryptedFile(path, provider) as ef:
        size = ef.plaintext_size
        for _ in range(10):
            cuts = sorted({0, size, *(rng.randint(0, size) for _ in range(4))})
            pieces = []
            total_lines = 0
            for a, b in itertools.pairwise(cuts):
                begin, stop = owned_span(ef, a, b)
                pieces.append(b"".join(bytes(v) for v in ef.read_range(begin, stop)))
                total_lines += count_lines(ef, begin, stop, skip_empty=False)
            assert b"".join(pieces) == data
            assert total_lines == len(data.splitlines())


@pytest.mark.parametrize("data", TRICKY, ids=range(len(TRICKY)))
def test_fast_count_matches_the_parsers(tmp_path, provider, data):
    path = encrypted(tmp_path, "d.ppml", data, provider)
    with F.EncryptedFile(path, provider) as ef:
        lines = count_lines(ef, 0, ef.plaintext_size, skip_empty=False)
        records = count_lines(ef, 0, ef.plaintext_size, skip_empty=True)
    assert lines == len(lines_array(data)) == len(data.splitlines())
    parsed = (
        pcsv.read_csv(io.BytesIO(data), read_options=pcsv.ReadOptions(column_names=["v"])).num_rows
        if data.strip()
        else 0
    )
    assert records == parsed


def csv_rows(n: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    out = ["id,name,score,day,flag"]
    for i in range(n):
        name = rng.choice(["ann", "bob", "", '"quoted, name"', "ünïcödé"])
        score = "" if rng.random() < 0.1 else f"{rng.uniform(-5, 5):.3f}"
        out.append(
            f"{i},{name},{score},2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)},"
            f"{rng.choice(['true', 'false'])}"
        )
    return ("\n".join(out) + "\n").encode()


SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("score", pa.float64()),
        ("day", pa.date32()),
        ("flag", pa.bool_()),
    ]
)


@pytest.mark.parametrize("split", [4096, 10_000, 1 << 20])
def test_csv_segments_parse_to_the_whole_table(tmp_path, provider, split):
    data = csv_rows(3000)
    path = encrypted(tmp_path, "t.csv.ppml", data, provider)
    spec = TableSpec("csv", SCHEMA, {"header": "true"})
    splits = plan_splits([file_info(str(path))], split)
    expected = pcsv.read_csv(
        io.BytesIO(data),
        convert_options=pcsv.ConvertOptions(
            column_types=dict(zip(SCHEMA.names, SCHEMA.types, strict=True)),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    batches, count = [], 0
    for sp in splits:
        for seg in sp.segments:
            with F.EncryptedFile(seg.path, provider) as ef:
                batches.extend(read_segment(ef, seg, spec))
                count += count_segment(ef, seg, spec)
    got = pa.Table.from_batches(batches, schema=SCHEMA)
    assert count == expected.num_rows == got.num_rows
    assert got.equals(expected.cast(SCHEMA))
    # column pruning: only the asked columns, same values
    with F.EncryptedFile(path, provider) as ef:
        seg = Segment(str(path), 0, ef.plaintext_size, ef.plaintext_size)
        only = pa.Table.from_batches(list(read_segment(ef, seg, spec, ["score"])))
    assert only.column_names == ["score"]
    assert only.column("score").equals(expected.column("score"))


def test_json_and_text_segments(tmp_path, provider):
    rows = [b'{"a": %d, "s": "x%d", "d": "2024-01-0%d"}' % (i, i, i % 9 + 1) for i in range(500)]
    data = b"\n".join(rows) + b"\n\n"
    path = encrypted(tmp_path, "t.json.ppml", data, provider)
    schema = pa.schema([("a", pa.int32()), ("d", pa.date32()), ("missing", pa.string())])
    spec = TableSpec("json", schema)
    with F.EncryptedFile(path, provider) as ef:
        total = 0
        batches = []
        for sp in plan_splits([file_info(str(path))], 4096):
            for seg in sp.segments:
                batches.extend(read_segment(ef, seg, spec))
                total += count_segment(ef, seg, spec)
    table = pa.Table.from_batches(batches, schema=schema)
    assert total == table.num_rows == 500
    assert table.column("a").to_pylist() == list(range(500))
    assert table.column("missing").null_count == 500
    text = TableSpec("text", pa.schema([("value", pa.string())]))
    with F.EncryptedFile(path, provider) as ef:
        seg = Segment(str(path), 0, ef.plaintext_size, ef.plaintext_size)
        lines = pa.Table.from_batches(list(read_segment(ef, seg, text)))
        assert count_segment(ef, seg, text) == lines.num_rows == 501  # the empty line too
    assert lines.column(0).to_pylist()[:2] == [r.decode() for r in rows[:2]]


def test_infer_schema(tmp_path, provider):
    path = encrypted(tmp_path, "t.csv.ppml", csv_rows(50), provider)
    with F.EncryptedFile(path, provider) as ef:
        schema = infer_schema(ef, "csv", {"header": "true"})
    assert schema.names == ["id", "name", "score", "day", "flag"]
    assert schema.field("id").type == pa.int64()
    assert schema.field("score").type == pa.float64()


def test_plan_packs_small_files_and_splits_big_ones(tmp_path, provider):
    small = [encrypted(tmp_path, f"s{i}.ppml", b"x\n" * 100, provider) for i in range(10)]
    big = encrypted(tmp_path, "big.ppml", os.urandom(200_000), provider)
    (tmp_path / "_SUCCESS").write_bytes(b"")
    (tmp_path / ".hidden").write_bytes(b"")
    files = list_files(tmp_path)
    assert sorted(files) == sorted(map(str, [*small, big]))
    splits = plan_splits([file_info(f) for f in files], 1 << 20)
    segs = [s for sp in splits for s in sp.segments]
    assert sum(s.end - s.start for s in segs) == 200_000 + 10 * 200
    assert len(splits) < len(files)  # small files were packed
    big_splits = plan_splits([file_info(str(big))], 1 << 20)
    assert len(big_splits) == 1
    tiny = plan_splits([file_info(str(big))], 64 << 10)
    assert len(tiny) == 4 and all(s.segments[0].start % CS == 0 for s in tiny)
