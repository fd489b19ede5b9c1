"""Parse decrypted CSV, JSON Lines and text into Arrow batches of an exact schema.

Used by the Spark data source (on executors), the late-materialising column functions
and the pandas helpers. Everything reads a :class:`~ppml_kernel.data.files.Segment` of an
open :class:`~ppml_kernel.data.format.EncryptedFile`, streams it through pyarrow's
parsers and returns batches whose schema equals the target schema exactly (Spark's
Python data source rejects anything else). ``columns`` restricts parsing to some
columns: pyarrow then skips converting the others, which is what makes column pruning
pay off.

Semantics follow Spark's readers where pyarrow can: header handling, ``nullValue``
(empty unquoted fields are null), quoted empty strings stay empty strings, JSON Lines
with missing fields as null and unknown fields ignored. Differences (documented in
docs/datasets.md): malformed records fail the query (Spark's FAILFAST), naive
timestamps are read in the ``timezone`` option's zone (default UTC).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson

from ppml_kernel.data.errors import DatasetError
from ppml_kernel.data.files import Segment, guess_format
from ppml_kernel.data.format import EncryptedFile
from ppml_kernel.data.records import RangeStream, count_lines, owned_span
from ppml_kernel.keys.provider import KeyProvider

LINE_FORMATS = ("csv", "json", "text")
FORMATS = (*LINE_FORMATS, "parquet")
BLOCK_SIZE = 4 << 20
TEXT_BLOCK = 8 << 20


def resolve_format(requested: str | None, files: Sequence[str]) -> str:
    """The format asked for, else the one the first file's name (or magic) suggests."""
    fmt = (requested or "").lower() or guess_format(files[0])
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return fmt


def option_true(value: str | None) -> bool:
    """A boolean reader/writer option as Spark spells it (``true``, ``1``, ``yes``, ``on``)."""
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class TableSpec:
    """What to parse: format, target Arrow schema and (lower-cased) format options."""

    format: str
    schema: pa.Schema
    options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise DatasetError(f"unknown format {self.format!r}; use one of {', '.join(FORMATS)}")
        object.__setattr__(self, "options", {k.lower(): v for k, v in self.options.items()})

    def opt(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name.lower(), default)

    @property
    def header(self) -> bool:
        return self.format == "csv" and option_true(self.opt("header"))

    @property
    def multiline(self) -> bool:
        return option_true(self.opt("multiline"))

    @property
    def splittable(self) -> bool:
        return self.format in LINE_FORMATS and not self.multiline

    @property
    def timezone(self) -> str:
        return self.opt("timezone") or "UTC"


# --------------------------------------------------------------------------- conformance


def _read_type(t: pa.DataType, fmt: str) -> pa.DataType:
    """The type to ask the parser for; :func:`conform` casts to the target afterwards."""
    if pa.types.is_timestamp(t):
        return pa.timestamp(t.unit)  # parse naive, then apply the timezone option
    if fmt == "json" and (pa.types.is_date(t) or pa.types.is_binary(t)):
        return pa.string()
    return t


def conform(batch: pa.RecordBatch, schema: pa.Schema, timezone: str = "UTC") -> pa.RecordBatch:
    """``batch`` with exactly ``schema``'s names, types and nullability (cast if needed)."""
    arrays = []
    for f in schema:
        col = batch.column(batch.schema.get_field_index(f.name))
        if col.type != f.type:
            col = _cast(col, f.type, timezone)
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _cast(col: pa.Array, target: pa.DataType, timezone: str) -> pa.Array:
    if pa.types.is_timestamp(target) and pa.types.is_timestamp(col.type):
        if target.tz is not None and col.type.tz is None:
            col = pc.assume_timezone(col, timezone=timezone, ambiguous="earliest",
                                     nonexistent="earliest")
        return col.cast(target)
    if pa.types.is_binary(target) and pa.types.is_string(col.type):
        return col.cast(pa.binary())
    return col.cast(target)


# --------------------------------------------------------------------------- CSV


_JAVA_TO_STRPTIME = (
    ("yyyy", "%Y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S"),
)


def _strptime(java_pattern: str) -> str:
    out = java_pattern
    for java, py in _JAVA_TO_STRPTIME:
        out = out.replace(java, py)
    return out.replace("'T'", "T")


def _csv_options(spec: TableSpec, names: Sequence[str], columns: Sequence[str] | None,
                 skip_header: bool) -> tuple[pcsv.ReadOptions, pcsv.ParseOptions,
                                             pcsv.ConvertOptions]:
    sep = spec.opt("sep") or spec.opt("delimiter") or ","
    if sep == "\\t":
        sep = "\t"
    if len(sep) != 1:
        raise DatasetError(f"CSV separator must be one character, got {sep!r}")
    escape = spec.opt("escape")
    parse = pcsv.ParseOptions(
        delimiter=sep,
        quote_char=spec.opt("quote") or '"',
        escape_char=escape if escape else False,
        newlines_in_values=spec.multiline,
        ignore_empty_lines=True,
    )
    null_value = spec.opt("nullvalue") or ""
    types = {f.name: _read_type(f.type, "csv") for f in spec.schema}
    parsers = []
    if spec.opt("timestampformat"):
        parsers.append(_strptime(spec.opt("timestampformat") or ""))
    convert = pcsv.ConvertOptions(
        column_types=types,
        include_columns=list(columns) if columns is not None else list(names),
        null_values=[null_value],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["true", "True", "TRUE"],
        false_values=["false", "False", "FALSE"],
        timestamp_parsers=parsers or None,
    )
    read = pcsv.ReadOptions(
        column_names=list(names),
        skip_rows=1 if skip_header else 0,
        block_size=BLOCK_SIZE,
        use_threads=False,
    )
    return read, parse, convert


def _date_format_fix(spec: TableSpec) -> None:
    if spec.opt("dateformat") and spec.opt("dateformat") != "yyyy-MM-dd":
        raise DatasetError("only the ISO dateFormat yyyy-MM-dd is supported")


# --------------------------------------------------------------------------- readers


def read_segment(ef: EncryptedFile, seg: Segment, spec: TableSpec,
                 columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Batches of the records owned by ``seg``, with ``spec.schema`` (or its ``columns``)."""
    target = _target(spec.schema, columns)
    begin, stop = owned_span(ef, seg.start, seg.end) if spec.splittable else (0, ef.plaintext_size)
    if stop <= begin:
        return
    try:
        if spec.format == "csv":
            yield from _read_csv(ef, begin, stop, seg.start == 0, spec, target)
        elif spec.format == "json":
            yield from _read_json(ef, begin, stop, spec, target)
        elif spec.format == "text":
            yield from _read_text(ef, begin, stop, target)
        else:
            raise DatasetError("parquet is read by ppml_kernel.data.parquet")
    except pa.ArrowInvalid as exc:
        raise DatasetError(
            f"{ef.source}: cannot parse {spec.format} records in plaintext bytes "
            f"{begin}..{stop}: {_short(exc)}"
        ) from None


def read_partition(part: Any, spec: TableSpec, provider: KeyProvider,
                   columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Batches of one Spark partition: its Parquet ``pieces`` or its ``split``'s segments.

    ``part`` is a ``spark_source.PPMLPartition`` (untyped: no pyspark here). Shared by the
    plain data source and the late-materialising column functions.
    """
    target = _target(spec.schema, columns)
    if part.pieces:
        from ppml_kernel.data.parquet import EncryptedParquet

        for piece in part.pieces:
            with EncryptedParquet(piece.path, provider) as ep:
                for b in ep.iter_batches(range(piece.start, piece.end), target.names):
                    yield conform(b, target)
        return
    for seg in part.split.segments:
        with EncryptedFile(seg.path, provider) as ef:
            yield from read_segment(ef, seg, spec, columns)


def _short(exc: Exception) -> str:
    # pyarrow quotes the offending row; keep the message short and one line. The
    # row is the user's own plaintext, shown only inside the enclave's session.
    text = str(exc).splitlines()[0]
    return text[:300]


def _target(schema: pa.Schema, columns: Sequence[str] | None) -> pa.Schema:
    if columns is None:
        return schema
    return pa.schema([schema.field(c) for c in columns])


def _read_csv(ef: EncryptedFile, begin: int, stop: int, at_file_start: bool, spec: TableSpec,
              target: pa.Schema) -> Iterator[pa.RecordBatch]:
    _date_format_fix(spec)
    read, parse, convert = _csv_options(spec, spec.schema.names, target.names,
                                        skip_header=spec.header and at_file_start)
    reader = pcsv.open_csv(RangeStream(ef, begin, stop), read_options=read,
                           parse_options=parse, convert_options=convert)
    for batch in reader:
        if batch.num_rows:
            yield conform(batch, target, spec.timezone)


def _read_json(ef: EncryptedFile, begin: int, stop: int, spec: TableSpec,
               target: pa.Schema) -> Iterator[pa.RecordBatch]:
    read_schema = pa.schema([pa.field(f.name, _read_type(f.type, "json")) for f in target])
    parse = pjson.ParseOptions(explicit_schema=read_schema, unexpected_field_behavior="ignore",
                               newlines_in_values=spec.multiline)
    reader = pjson.open_json(RangeStream(ef, begin, stop),
                             read_options=pjson.ReadOptions(block_size=BLOCK_SIZE,
                                                            use_threads=False),
                             parse_options=parse)
    for batch in reader:
        if batch.num_rows:
            yield conform(batch, target, spec.timezone)


def _read_text(ef: EncryptedFile, begin: int, stop: int, target: pa.Schema
               ) -> Iterator[pa.RecordBatch]:
    carry = b""
    pos = begin
    while pos < stop:
        end = min(stop, pos + TEXT_BLOCK)
        block = carry + RangeStream(ef, pos, end).read_all()
        pos = end
        if pos < stop:
            cut = block.rfind(b"\n") + 1
            block, carry = block[:cut], block[cut:]
        else:
            carry = b""
        if block:
            yield pa.RecordBatch.from_arrays([lines_array(block)], schema=target)
    if carry:
        yield pa.RecordBatch.from_arrays([lines_array(carry)], schema=target)


def lines_array(block: bytes) -> pa.Array:
    """A string array of the lines in ``block`` without ``\\n`` / ``\\r\\n`` terminators."""
    arr = np.frombuffer(block, dtype=np.uint8)
    nl = np.flatnonzero(arr == 10)
    ends = np.append(nl, len(block)) if len(block) and block[-1:] != b"\n" else nl
    starts = np.empty(len(ends), dtype=np.int64)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    cr = (ends > starts) & (arr[np.maximum(ends - 1, 0)] == 13) if len(arr) else ends > starts
    stops = ends - cr
    mask = np.ones(len(arr), dtype=bool)
    mask[nl] = False
    mask[(ends - 1)[cr]] = False
    offsets = np.zeros(len(ends) + 1, dtype=np.int32)
    np.cumsum(stops - starts, out=offsets[1:])
    return pa.StringArray.from_buffers(len(ends), pa.py_buffer(offsets),
                                       pa.py_buffer(arr[mask].tobytes()))


def count_segment(ef: EncryptedFile, seg: Segment, spec: TableSpec) -> int:
    """Records owned by ``seg`` without parsing them (the fast count path)."""
    if spec.format not in LINE_FORMATS:
        raise DatasetError("count_segment is for line formats")
    if spec.multiline:
        first = spec.schema.names[:1]
        return sum(b.num_rows for b in read_segment(ef, seg, spec, first))
    begin, stop = owned_span(ef, seg.start, seg.end)
    n = count_lines(ef, begin, stop, skip_empty=spec.format != "text")
    if spec.header and seg.start == 0 and n:
        n -= 1
    return n


# --------------------------------------------------------------------------- inference


def infer_schema(ef: EncryptedFile, fmt: str, options: Mapping[str, str],
                 sample_bytes: int = 1 << 20) -> pa.Schema:
    """Infer a schema from the first ``sample_bytes`` of a file (whole lines only)."""
    opts = {k.lower(): v for k, v in options.items()}
    if fmt == "text":
        return pa.schema([pa.field("value", pa.string())])
    take = min(ef.plaintext_size, sample_bytes)
    sample = RangeStream(ef, 0, take).read_all()
    if take < ef.plaintext_size:
        cut = sample.rfind(b"\n")
        sample = sample[: cut + 1] if cut >= 0 else sample
    if not sample.strip():
        raise DatasetError(f"{ef.source} is empty: give a schema explicitly")
    buf = pa.BufferReader(sample)
    if fmt == "csv":
        header = option_true(opts.get("header"))
        sep = opts.get("sep") or opts.get("delimiter") or ","
        table = pcsv.read_csv(
            buf,
            read_options=pcsv.ReadOptions(autogenerate_column_names=not header),
            parse_options=pcsv.ParseOptions(delimiter="\t" if sep == "\\t" else sep,
                                            quote_char=opts.get("quote") or '"'),
            convert_options=pcsv.ConvertOptions(strings_can_be_null=True),
        )
        names = table.schema.names if header else [f"_c{i}" for i in range(table.num_columns)]
        fields = [pa.field(n, _spark_friendly(t)) for n, t in zip(names, table.schema.types,
                                                                   strict=True)]
        return pa.schema(fields)
    if fmt == "json":
        table = pjson.read_json(buf)
        fields = sorted((pa.field(f.name, _spark_friendly(f.type)) for f in table.schema),
                        key=lambda f: f.name)  # Spark orders inferred JSON fields by name
        return pa.schema(fields)
    raise DatasetError(f"cannot infer a schema for format {fmt!r}")


def _spark_friendly(t: pa.DataType) -> pa.DataType:
    """Map inferred Arrow types onto ones Spark has (null -> string, s -> us, ...)."""
    if pa.types.is_null(t):
        return pa.string()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_integer(t):
        return pa.int64() if t.bit_width > 32 or pa.types.is_unsigned_integer(t) else pa.int32()
    if pa.types.is_floating(t):
        return pa.float64()
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_struct(t) or pa.types.is_list(t):
        return pa.string()
    return t
