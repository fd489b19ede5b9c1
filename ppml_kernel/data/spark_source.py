"""The ``ppml`` Spark data source: encrypted files in, Arrow batches out, decrypted on executors.

Reading::

    spark.read.format("ppml").option("format", "csv").option("header", "true")
         .schema("id long, name string").load("/data/people")       # files or directories

Writing::

    df.write.format("ppml").option("format", "parquet").option("key", "sales")
      .mode("overwrite").save("/data/out")

Formats: ``csv``, ``json`` (JSON Lines), ``text`` (one ``value`` column) in
``ppml-aead/1`` files, and ``parquet`` (Parquet Modular Encryption, or Parquet wrapped
in ppml-aead). Line formats are split on chunk boundaries into partitions of about
``splitBytes`` (default 32 MiB here; the loader uses two splits per core).

Keys never travel in options: ``read()`` and ``write()`` run on executors and ask the
key source named by the ``keysource`` option (:mod:`ppml_kernel.keys.registry`).

Spark's Python data sources cannot see which columns a query needs, so this reader
parses every column. :func:`ppml_kernel.data.sparkio.read` builds a DataFrame on top of
the ``refs`` mode of this source that Spark *can* prune (count() parses nothing); the
magics use that. See docs/datasets.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark.sql.datasource import (
    DataSource,
    DataSourceArrowWriter,
    DataSourceReader,
    InputPartition,
    WriterCommitMessage,
)
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import StructType

from ppml_kernel.data.errors import DatasetError
from ppml_kernel.data.files import (
    DEFAULT_SPLIT_BYTES,
    FileInfo,
    Segment,
    Split,
    file_info,
    list_files,
    plan_splits,
)
from ppml_kernel.data.format import DEFAULT_CHUNK_SIZE, FILE_SUFFIX, EncryptedFile
from ppml_kernel.data.late import REF_MASK, REF_SHIFT
from ppml_kernel.data.tabular import (
    FORMATS,
    TableSpec,
    count_segment,
    infer_schema,
    read_partition,
    resolve_format,
)
from ppml_kernel.keys.registry import provider_for

NAME = "ppml"
REF_COLUMN = "__ppml_ref"
REF_BATCH = 1 << 20


def spark_to_arrow(schema: StructType) -> pa.Schema:
    """The exact Arrow schema Spark expects from a Python data source for ``schema``."""
    return to_arrow_schema(schema, timezone="UTC")


def arrow_to_spark(schema: pa.Schema) -> StructType:
    return from_arrow_schema(schema, prefer_timestamp_ntz=False)


def option_paths(options: Mapping[str, str]) -> list[str]:
    if options.get("paths"):
        paths = json.loads(options["paths"])
        if options.get("path"):
            paths.insert(0, options["path"])
        return paths
    if options.get("path"):
        return [options["path"]]
    raise DatasetError("no path: use .load(PATH) or .save(PATH)")


@dataclass(frozen=True)
class ParquetPiece:
    """Row groups ``[start, end)`` of one encrypted Parquet file."""

    path: str
    start: int
    end: int
    rows: int


def plan_parquet(files: list[str], options: Mapping[str, str], split_rows: int
                 ) -> list[tuple[ParquetPiece, ...]]:
    """Pieces of about ``split_rows`` rows (row-group aligned); reads footers (needs keys)."""
    from ppml_kernel.data.parquet import EncryptedParquet

    provider = provider_for(options)
    splits: list[tuple[ParquetPiece, ...]] = []
    for path in files:
        with EncryptedParquet(path, provider) as ep:
            md = ep.file.metadata
            start, rows = 0, 0
            for rg in range(md.num_row_groups):
                rows += md.row_group(rg).num_rows
                if rows >= split_rows:
                    splits.append((ParquetPiece(path, start, rg + 1, rows),))
                    start, rows = rg + 1, 0
            if start < md.num_row_groups or md.num_row_groups == 0:
                splits.append((ParquetPiece(path, start, md.num_row_groups, rows),))
    return splits


class PPMLPartition(InputPartition):
    """One task: line-format segments or Parquet pieces, with its index (for refs)."""

    def __init__(self, index: int, split: Split | None = None,
                 pieces: tuple[ParquetPiece, ...] = ()) -> None:
        super().__init__(index)
        self.index = index
        self.split = split
        self.pieces = pieces


def plan_partitions(options: Mapping[str, str], fmt: str, files: list[str],
                    infos: list[FileInfo] | None = None) -> list[PPMLPartition]:
    """The partitions for these options (the loader sends them pre-computed as a manifest).

    ``infos``: the files' :func:`file_info`, when the caller has read the headers already.
    """
    manifest = options.get("manifest")
    if manifest:
        return manifest_to_partitions(manifest)
    split_bytes = int(options.get("splitbytes") or DEFAULT_SPLIT_BYTES)
    if fmt == "parquet":
        split_rows = int(options.get("splitrows") or 1 << 20)
        return [PPMLPartition(i, pieces=p)
                for i, p in enumerate(plan_parquet(files, options, split_rows))]
    spec_multiline = str(options.get("multiline", "")).lower() == "true"
    if infos is None:
        infos = [file_info(f) for f in files]
    splits = plan_splits(infos, split_bytes, splittable=not spec_multiline)
    return [PPMLPartition(i, split=s) for i, s in enumerate(splits)]


def partitions_to_manifest(parts: list[PPMLPartition]) -> str:
    out = []
    for p in parts:
        if p.split is not None:
            out.append({"s": [[s.path, s.start, s.end, s.plaintext_size]
                              for s in p.split.segments]})
        else:
            out.append({"p": [[q.path, q.start, q.end, q.rows] for q in p.pieces]})
    return json.dumps(out, separators=(",", ":"))


def manifest_to_partitions(manifest: str) -> list[PPMLPartition]:
    parts = []
    for i, item in enumerate(json.loads(manifest)):
        if "s" in item:
            parts.append(PPMLPartition(i, split=Split(tuple(Segment(*s) for s in item["s"]))))
        else:
            parts.append(PPMLPartition(i, pieces=tuple(ParquetPiece(*q) for q in item["p"])))
    return parts


def table_spec(fmt: str, arrow_schema: pa.Schema, options: Mapping[str, str]) -> TableSpec:
    keep = {k: v for k, v in options.items()
            if k not in ("path", "paths", "manifest", "keyfile", "keybroker", "keysource")}
    return TableSpec(fmt, arrow_schema, keep)


def infer_arrow_schema(fmt: str, files: list[str], options: Mapping[str, str]) -> pa.Schema:
    """Schema from the first file (decrypts its first MiB, or reads the Parquet footer)."""
    provider = provider_for(options)
    if fmt == "parquet":
        from ppml_kernel.data.parquet import EncryptedParquet

        with EncryptedParquet(files[0], provider) as ep:
            return ep.file.schema_arrow
    with EncryptedFile(files[0], provider) as ef:
        return infer_schema(ef, fmt, options)


class PPMLDataSource(DataSource):
    """``format("ppml")``: see the module docstring."""

    @classmethod
    def name(cls) -> str:
        return NAME

    def schema(self) -> StructType:
        if (self.options.get("mode") or "").lower() == "refs":
            return _ref_schema()
        files = list_files(option_paths(self.options))
        fmt = resolve_format(self.options.get("format"), files)
        return arrow_to_spark(infer_arrow_schema(fmt, files, self.options))

    def reader(self, schema: StructType) -> DataSourceReader:
        return PPMLReader(schema, dict(self.options))

    def writer(self, schema: StructType, overwrite: bool) -> PPMLWriter:
        return PPMLWriter(schema, dict(self.options), overwrite)


def _ref_schema() -> StructType:
    from pyspark.sql.types import LongType, StructField

    return StructType([StructField(REF_COLUMN, LongType(), False)])


class PPMLReader(DataSourceReader):
    """Plans partitions on the driver side; decrypts and parses on executors."""

    def __init__(self, schema: StructType, options: dict[str, str]) -> None:
        self.options = options
        self.refs = (options.get("mode") or "").lower() == "refs"
        if self.refs:
            self.out_schema = spark_to_arrow(_ref_schema())
            # The schema of the data behind the refs (needed to count multi-line records).
            ddl = options.get("dataschema")
            self.data_schema = (
                spark_to_arrow(StructType.fromJson(json.loads(ddl))) if ddl else None
            )
        else:
            self.out_schema = spark_to_arrow(schema)
            self.data_schema = self.out_schema
        self.files = list_files(option_paths(options)) if not options.get("manifest") else []
        self.fmt = (options.get("format") or "").lower() or (
            resolve_format(None, self.files) if self.files else "csv")

    def partitions(self) -> list[InputPartition]:
        return list(plan_partitions(self.options, self.fmt, self.files))

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, PPMLPartition)
        provider = provider_for(self.options)
        if self.refs:
            yield from self._read_refs(partition, provider)
            return
        yield from read_partition(partition, table_spec(self.fmt, self.out_schema, self.options),
                                  provider)

    def _read_refs(self, partition: PPMLPartition, provider: object) -> Iterator[pa.RecordBatch]:
        """One int64 per record: partition index << 40 | record number (no parsing)."""
        if partition.pieces:
            total = sum(p.rows for p in partition.pieces)
        else:
            assert partition.split is not None
            spec = TableSpec(self.fmt, self.data_schema or pa.schema([]), self.options)
            total = 0
            for seg in partition.split.segments:
                with EncryptedFile(seg.path, provider) as ef:  # type: ignore[arg-type]
                    total += count_segment(ef, seg, spec)
        if total > REF_MASK:
            raise DatasetError("a partition has too many records; lower splitBytes")
        base = partition.index << REF_SHIFT
        for k in range(0, total, REF_BATCH):
            n = min(REF_BATCH, total - k)
            refs = pa.array(np.arange(base + k, base + k + n, dtype=np.int64))
            yield pa.RecordBatch.from_arrays([refs], schema=self.out_schema)


# --------------------------------------------------------------------------- writer


@dataclass
class PPMLCommit(WriterCommitMessage):
    files: list[str]
    rows: int


class PPMLWriter(DataSourceArrowWriter):
    """Each task writes one encrypted file; the driver renames them into place on commit."""

    def __init__(self, schema: StructType, options: dict[str, str], overwrite: bool) -> None:
        self.options = options
        self.overwrite = overwrite
        self.path = option_paths(options)[0]
        self.fmt = (options.get("format") or "parquet").lower()
        if self.fmt not in FORMATS:
            raise DatasetError(f"unknown format {self.fmt!r}; use one of {', '.join(FORMATS)}")
        self.key_id = options.get("key") or options.get("keyid")
        if not self.key_id:
            raise DatasetError("writing needs .option('key', KEY_ID): the key id to encrypt under")
        self.chunk_size = int(options.get("chunksize") or DEFAULT_CHUNK_SIZE)
        self.schema = spark_to_arrow(schema)
        self.job = uuid.uuid4().hex[:12]
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise DatasetError(f"{self.path} exists and is not a directory")
        # Spark allows only append and overwrite for Python data sources; sparkio.write
        # adds errorifexists and ignore on top.
        os.makedirs(self.path, exist_ok=True)

    def write(self, iterator: Iterator[pa.RecordBatch]) -> PPMLCommit:
        from pyspark import TaskContext

        from ppml_kernel.data.writers import write_batches

        ctx = TaskContext.get()
        part = ctx.partitionId() if ctx else 0
        attempt = ctx.attemptNumber() if ctx else 0
        ext = {"csv": ".csv", "json": ".json", "text": ".txt", "parquet": ".parquet"}[self.fmt]
        final = f"part-{part:05d}-{self.job}{ext}" + ("" if self.fmt == "parquet" else FILE_SUFFIX)
        tmp = os.path.join(self.path, f".{final}.{attempt}.tmp")
        provider = provider_for(self.options)
        try:
            rows = write_batches(iterator, tmp, self.fmt, self.schema, provider, self.key_id,
                                 self.options, chunk_size=self.chunk_size)
        except BaseException:
            _unlink(tmp)
            raise
        if rows == 0:
            _unlink(tmp)
            return PPMLCommit([], 0)
        return PPMLCommit([tmp], rows)

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        written = [f for m in messages if isinstance(m, PPMLCommit) for f in m.files]
        keep = set()
        for tmp in written:
            name = os.path.basename(tmp)[1:].rsplit(".", 2)[0]
            final = os.path.join(self.path, name)
            os.replace(tmp, final)
            keep.add(final)
        if self.overwrite:
            for old in list_data_files(self.path):
                if old not in keep:
                    _unlink(old)
        with open(os.path.join(self.path, "_SUCCESS"), "w"):
            pass

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:
        for m in messages:
            if isinstance(m, PPMLCommit):
                for f in m.files:
                    _unlink(f)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def list_data_files(path: str) -> list[str]:
    try:
        return list_files(path)
    except DatasetError:
        return []

