"""Read and write encrypted datasets with Spark (the API the magics use).

:func:`read` returns a DataFrame that Spark can prune column by column (see
:mod:`ppml_kernel.data.late`): ``count()`` counts records without parsing them and a
query parses only the columns it uses. ``spark.read.format("ppml")`` gives the same
rows through the plain data source, which parses every column.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ppml_kernel.data.errors import DatasetError
from ppml_kernel.data.files import choose_split_bytes, file_info, list_files
from ppml_kernel.data.format import HEADER_SIZE, Header
from ppml_kernel.data.sniff import PME_MAGIC
from ppml_kernel.keys.ids import check_key_id

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

_registered: set[int] = set()


def register(spark: SparkSession) -> None:
    """Register the ``ppml`` data source with ``spark`` and start the local key broker."""
    from ppml_kernel.data.spark_source import PPMLDataSource
    from ppml_kernel.keys.broker.local import start_local_broker

    start_local_broker()
    if id(spark) not in _registered:
        spark.dataSource.register(PPMLDataSource)
        _registered.add(id(spark))


def _normalise(options: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in options.items():
        if v is None:
            continue
        out[k.lower()] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


def _schema(spark: SparkSession, schema: StructType | str) -> StructType:
    from pyspark.sql.types import StructType

    if isinstance(schema, StructType):
        return schema
    return spark.createDataFrame([], schema).schema


def key_ids_of(files: Iterable[str]) -> dict[str, str]:
    """Key id of each ``ppml-aead/1`` file, from its header (PME files are skipped)."""
    out: dict[str, str] = {}
    for f in files:
        with open(f, "rb") as fh:
            head, size = fh.read(HEADER_SIZE), os.fstat(fh.fileno()).st_size
        if not head.startswith(PME_MAGIC):
            out[f] = Header.parse(head, f, size).key_id
    return out


def check_key(files: Iterable[str], key: str) -> None:
    """Fail early, naming the file, if a file is not encrypted for key id ``key``."""
    for f in files:
        with open(f, "rb") as fh:
            head, size = fh.read(HEADER_SIZE), os.fstat(fh.fileno()).st_size
        if head.startswith(PME_MAGIC):
            continue  # PME keeps its key ids in the encrypted footer
        kid = Header.parse(head, f, size).key_id  # one read per file, as read_header does
        if kid != key:
            raise DatasetError(f"{f} is encrypted for key id {kid!r}, not {key!r}")


def read(spark: SparkSession, path: str | os.PathLike[str] | Iterable[str],
         format: str | None = None, schema: StructType | str | None = None, *,
         key: str | None = None, **options: Any) -> DataFrame:
    """A DataFrame over encrypted files (decrypted on executors, columns pruned by Spark).

    ``format``: csv, json, text or parquet (default: from the file names). ``schema``:
    a StructType or DDL string; inferred from the first file when omitted. ``key``:
    require every file to be encrypted for this key id. Other options as for
    ``spark.read.format("ppml")`` (``header``, ``sep``, ``splitBytes``, ``keysource``...).
    """
    from pyspark.sql import functions as F
    from pyspark.sql.functions import arrow_udf

    from ppml_kernel.data.codec import native_csv, native_csv_enabled
    from ppml_kernel.data.late import ColumnFunction, ReadPlan
    from ppml_kernel.data.refcounts import partition_counts, ref_frame
    from ppml_kernel.data.spark_source import (
        REF_COLUMN,
        arrow_to_spark,
        infer_arrow_schema,
        partitions_to_manifest,
        plan_partitions,
        spark_to_arrow,
        table_spec,
    )
    from ppml_kernel.data.tabular import resolve_format

    register(spark)
    paths = [os.fspath(path)] if isinstance(path, (str, os.PathLike)) else [
        os.fspath(p) for p in path]
    opts = _normalise(options)
    files = list_files(paths)
    fmt = resolve_format(format, files)
    if key:
        check_key(files, key)
    if fmt == "parquet" and _native_pme(spark, files, opts):
        return _read_native_parquet(spark, files, schema, opts)
    infos = None
    if fmt != "parquet":
        infos = [file_info(f) for f in files]  # one header read per file, for every use
    total = sum(i.plaintext_size for i in infos or ())
    cores = spark.sparkContext.defaultParallelism
    if schema is None:
        spark_schema = arrow_to_spark(infer_arrow_schema(fmt, files, opts))
    else:
        spark_schema = _schema(spark, schema)
    opts.setdefault("timezone", spark.conf.get("spark.sql.session.timeZone") or "UTC")
    if fmt == "csv" and native_csv_enabled(spark) and native_csv(files, opts, total, cores):
        return _read_native_csv(spark, files, spark_schema, opts)
    arrow_schema = spark_to_arrow(spark_schema)
    if fmt != "parquet" and "splitbytes" not in opts:
        opts["splitbytes"] = str(choose_split_bytes(total, cores))
    partitions = plan_partitions({**opts, "format": fmt}, fmt, files, infos)

    def refs_scan() -> DataFrame:  # the data source's refs mode, for counting large data
        return (
            spark.read.format("ppml")
            .options(**opts)
            .option("format", fmt)
            .option("mode", "refs")
            .option("dataschema", spark_schema.json())
            .option("manifest", partitions_to_manifest(partitions))
            .load()
        )

    spec = table_spec(fmt, arrow_schema, opts)
    counts = partition_counts(spark, partitions, spec, opts, refs_scan)
    refs = ref_frame(spark, counts)
    key_options = {k: v for k, v in opts.items() if k in ("keysource", "keyfile", "keybroker")}
    plan = ReadPlan(uuid.uuid4().hex, spec, tuple(partitions), key_options, tuple(counts))
    columns = []
    for field in spark_schema.fields:
        fn = arrow_udf(ColumnFunction(plan, field.name), field.dataType).asNondeterministic()
        columns.append(fn(F.col(REF_COLUMN)).alias(field.name))
    return refs.select(*columns)


def _native_pme(spark: SparkSession, files: list[str], opts: Mapping[str, str]) -> bool:
    """Spark's own reader can take these files: PME Parquet and the broker KMS client."""
    from ppml_kernel.keys.pme.names import native_pme_enabled

    if opts.get("native", "true") == "false" or opts.get("keysource", "local") != "local":
        return False
    if not native_pme_enabled(spark):
        return False
    for f in files:
        with open(f, "rb") as fh:
            if fh.read(len(PME_MAGIC)) != PME_MAGIC:
                return False
    return True


def _read_native_parquet(spark: SparkSession, files: list[str], schema: StructType | str | None,
                         opts: Mapping[str, str]) -> DataFrame:
    """``spark.read.parquet`` on PME files, after opening one footer here for clear errors."""
    from ppml_kernel.data.parquet import EncryptedParquet
    from ppml_kernel.keys.registry import provider_for

    with EncryptedParquet(files[0], provider_for(opts)):
        pass  # wrong or missing keys fail here, naming the file and the key id
    reader = spark.read
    if schema is not None:
        reader = reader.schema(_schema(spark, schema))
    return reader.parquet(*files)


def _read_native_csv(spark: SparkSession, files: list[str], schema: StructType,
                     opts: Mapping[str, str]) -> DataFrame:
    """Spark's own CSV reader on ppml-aead/1 files (see :mod:`ppml_kernel.data.codec`).

    Every file's header and data key are checked here first, so a missing or wrong key
    or a damaged header fails before Spark starts, naming the file. ``FAILFAST``: a
    value that does not parse is an error, as on the Python path, never a silent null.
    """
    from ppml_kernel.data.format import EncryptedFile
    from ppml_kernel.data.tabular import option_true
    from ppml_kernel.keys.registry import provider_for

    provider = provider_for(opts)
    for f in files:
        with EncryptedFile(f, provider):
            pass
    sep = opts.get("sep") or opts.get("delimiter") or ","
    if len(sep.replace("\\t", "\t")) != 1:
        raise DatasetError(f"CSV separator must be one character, got {sep!r}")
    return (
        spark.read.schema(schema)
        .option("header", "true" if option_true(opts.get("header")) else "false")
        .option("sep", sep)
        .option("quote", opts.get("quote") or '"')
        .option("timeZone", opts["timezone"])
        .option("mode", "FAILFAST")
        .csv(files)
    )


def write(df: DataFrame, path: str | os.PathLike[str], key: str, format: str = "parquet",
          mode: str = "errorifexists", **options: Any) -> None:
    """Write ``df`` encrypted under key id ``key`` (one file per partition)."""
    from ppml_kernel.data.spark_source import list_data_files

    register(df.sparkSession)
    target = os.fspath(path)
    mode = mode.lower()
    if mode in ("error", "errorifexists") and list_data_files(target):
        raise DatasetError(f"{target} already holds data; use mode='overwrite' or 'append'")
    if mode == "ignore" and list_data_files(target):
        return
    spark_mode = "overwrite" if mode == "overwrite" else "append"
    from ppml_kernel.keys.pme.names import native_pme_enabled, write_options

    if format == "parquet" and native_pme_enabled(df.sparkSession) and \
            options.get("native", True) not in (False, "false"):
        check_key_id(key)
        df.write.options(**write_options(key)).mode(spark_mode).parquet(target)
        return
    (
        df.write.format("ppml")
        .options(**_normalise(options))
        .option("format", format)
        .option("key", key)
        .mode(spark_mode)
        .save(target)
    )


def save_model(model: Any, path: str | os.PathLike[str], key: str, *, format: str = "pme",
               overwrite: bool = False) -> None:
    """Save a fitted Spark ML model (or scikit-learn estimator) encrypted under ``key``.

    See :mod:`ppml_kernel.data.models` (the one home of encrypted models).
    """
    from ppml_kernel.data.models import save_model as _save

    _save(model, path, key, format=format, overwrite=overwrite)


def load_model(path: str | os.PathLike[str], key: str | None = None, **kwargs: Any) -> Any:
    """Load a model saved by :func:`save_model`, after checking every file of it."""
    from ppml_kernel.data.models import load_model as _load

    return _load(path, key, **kwargs)
