"""Write Arrow batches as encrypted CSV, JSON Lines, text (ppml-aead/1) or PME Parquet.

Shared by the Spark data source's writer (one file per task) and the pandas helpers.
Output is readable by :mod:`ppml_kernel.data.tabular` with the same options.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
from collections.abc import Iterable, Mapping

import pyarrow as pa
import pyarrow.csv as pcsv

from ppml_kernel.data.errors import DatasetError
from ppml_kernel.data.format import DEFAULT_CHUNK_SIZE, EncryptingWriter
from ppml_kernel.data.tabular import option_true
from ppml_kernel.keys.provider import KeyProvider


def write_batches(batches: Iterable[pa.RecordBatch], path: str, fmt: str, schema: pa.Schema,
                  provider: KeyProvider, key_id: str, options: Mapping[str, str] | None = None,
                  *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Write ``batches`` to the new file ``path``; returns the number of rows.

    The file is created exclusively (never overwrites) and mode 0600. On error the
    partial file is left for the caller to delete; a ppml-aead file without its final
    chunk is rejected by readers anyway.
    """
    opts = {k.lower(): v for k, v in (options or {}).items()}
    if fmt == "parquet":
        from ppml_kernel.data.parquet import ParquetStreamWriter

        w = ParquetStreamWriter(path, schema, provider, key_id)
        try:
            for b in batches:
                if b.num_rows:
                    w.write(b)
        finally:
            w.close()
        return w.rows
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    raw = os.fdopen(fd, "wb", buffering=1 << 20)
    writer = EncryptingWriter(raw, provider, key_id, chunk_size, source=path)
    rows = 0
    try:
        if fmt == "csv":
            rows = _write_csv(batches, writer, schema, opts)
        elif fmt == "json":
            rows = _write_json(batches, writer)
        elif fmt == "text":
            rows = _write_text(batches, writer, schema)
        else:
            raise DatasetError(f"cannot write format {fmt!r}")
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return rows


def _write_csv(batches: Iterable[pa.RecordBatch], out: EncryptingWriter, schema: pa.Schema,
               opts: Mapping[str, str]) -> int:
    sep = opts.get("sep") or opts.get("delimiter") or ","
    options = pcsv.WriteOptions(include_header=option_true(opts.get("header")),
                                delimiter="\t" if sep == "\\t" else sep)
    rows = 0
    with pcsv.CSVWriter(out, _csv_schema(schema), write_options=options) as w:
        for b in batches:
            w.write_batch(_csv_batch(b))
            rows += b.num_rows
    return rows


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, _csv_type(f.type)) for f in schema])


def _csv_type(t: pa.DataType) -> pa.DataType:
    # ISO text that our reader (and Spark's) parses back: "2024-01-02 03:04:05.000001".
    return pa.string() if pa.types.is_timestamp(t) or pa.types.is_binary(t) else t


def _csv_batch(b: pa.RecordBatch) -> pa.RecordBatch:
    cols = []
    for col in b.columns:
        if pa.types.is_timestamp(col.type):
            col = _iso_timestamps(col)
        elif pa.types.is_binary(col.type):
            col = col.cast(pa.string())
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, names=b.schema.names)


def _iso_timestamps(col: pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    if col.type.tz is not None:
        col = pc.cast(col, pa.timestamp(col.type.unit, tz="UTC")).cast(pa.timestamp(col.type.unit))
    return pc.strftime(col, format="%Y-%m-%dT%H:%M:%S")


_RAW = "\x00ppml-raw:"
_END = "\x00ppml-end"
_RAW_OPEN = '"' + json.dumps(_RAW)[1:-1]
_RAW_CLOSE = json.dumps(_END)[1:-1] + '"'


def _json_default(value: object) -> object:
    if isinstance(value, decimal.Decimal):
        return _RAW + str(value) + _END
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _write_json(batches: Iterable[pa.RecordBatch], out: EncryptingWriter) -> int:
    rows = 0
    for b in batches:
        lines = []
        for row in b.to_pylist():
            line = json.dumps({k: v for k, v in row.items() if v is not None},
                              default=_json_default, ensure_ascii=False, separators=(",", ":"))
            if _RAW_OPEN in line:  # decimals as exact JSON numbers, not floats
                line = line.replace(_RAW_OPEN, "").replace(_RAW_CLOSE, "")
            lines.append(line)
        if lines:
            out.write(("\n".join(lines) + "\n").encode("utf-8"))
        rows += b.num_rows
    return rows


def _write_text(batches: Iterable[pa.RecordBatch], out: EncryptingWriter,
                schema: pa.Schema) -> int:
    if len(schema) != 1 or not (pa.types.is_string(schema[0].type)
                                or pa.types.is_large_string(schema[0].type)):
        raise DatasetError("format text writes exactly one string column")
    rows = 0
    for b in batches:
        values = b.column(0).to_pylist()
        if any(v is None for v in values):
            raise DatasetError("format text cannot write null values")
        if values:
            out.write(("\n".join(values) + "\n").encode("utf-8"))
        rows += b.num_rows
    return rows
