"""Record counts per partition, so the refs of :func:`sparkio.read` come from ``spark.range``.

Why: a Python data source gives Spark no statistics, so a DataFrame over it is "infinitely
large" to the optimiser (no broadcast joins: every join of a TPC-H query became a
sort-merge join with two shuffles), and every query pays for planning it in a Python
process and for running it in Python workers. A ``spark.range`` (see :func:`ref_frame`)
is planned in the JVM, has a size Spark can estimate, and costs next to nothing to run;
the column functions (:mod:`ppml_kernel.data.late`) then decrypt what a query uses.

That needs the number of records of each partition when the DataFrame is built. They
are counted once (newlines in the decrypted chunks, nothing parsed): in this process
for small datasets, by a Spark job over the ``refs`` mode of the data source for large
ones, and whenever counting here fails (then the executors' job reports the wrong key or
the modified chunk exactly as a query would). Counts are cached in this process keyed by
each file's identity (device, inode, size, modification time) and the options that
change what a record is, so loading the same files again costs no decryption; a file
that changes gets a new key. Only counts are cached, never keys or plaintext. The
column functions check at the end of each partition that the file still holds exactly
the counted records.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from ppml_kernel.data.tabular import TableSpec

# Up to this many plaintext bytes are counted in this process (about 0.1-0.3 s);
# larger datasets are counted by a Spark job, in parallel on executors.
DRIVER_COUNT_BYTES = 128 << 20
# Options that do not change what a record is (kept out of the cache key).
_NOT_RECORD_OPTIONS = ("path", "paths", "manifest", "keyfile", "keybroker", "keysource",
                       "splitbytes", "splitrows", "mode", "dataschema", "timezone")

_lock = threading.Lock()
_cache: dict[tuple[Any, ...], int] = {}
_MAX_CACHE = 100_000


def _identity(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _spec_key(spec: TableSpec) -> str:
    opts = {k: v for k, v in spec.options.items() if k not in _NOT_RECORD_OPTIONS}
    # The schema only matters where records are found by parsing (multi-line CSV).
    schema = spec.schema.to_string() if spec.multiline else ""
    return json.dumps([spec.format, sorted(opts.items()), schema])


def _partition_key(spec_key: str, part: Any) -> tuple[Any, ...]:
    return (spec_key, tuple((seg.path, _identity(seg.path), seg.start, seg.end)
                            for seg in part.split.segments))


def count_in_process(part: Any, spec: TableSpec, provider: Any) -> int:
    """Records of one line-format partition, counted here (decrypts, parses nothing)."""
    from ppml_kernel.data.format import EncryptedFile
    from ppml_kernel.data.tabular import count_segment

    total = 0
    for seg in part.split.segments:
        with EncryptedFile(seg.path, provider) as ef:
            total += count_segment(ef, seg, spec)
    return total


def partition_counts(spark: SparkSession, partitions: Sequence[Any], spec: TableSpec,
                     options: Mapping[str, str], refs_frame: Any) -> list[int]:
    """Records per partition: from the footers (Parquet), the cache, here, or a Spark job.

    ``refs_frame()`` returns the data source's refs DataFrame over ``partitions`` (only
    called when a Spark job has to count).
    """
    from ppml_kernel.keys.registry import provider_for

    if all(p.pieces or p.split is None for p in partitions):
        return [sum(q.rows for q in p.pieces) for p in partitions]
    skey = _spec_key(spec)
    keys = [_partition_key(skey, p) for p in partitions]
    with _lock:
        counts: list[int | None] = [_cache.get(k) for k in keys]
    missing = [i for i, c in enumerate(counts) if c is None]
    if missing:
        todo = sum(partitions[i].split.nbytes for i in missing)
        counted = False
        if todo <= DRIVER_COUNT_BYTES:
            try:
                provider = provider_for(options)
                for i in missing:
                    counts[i] = count_in_process(partitions[i], spec, provider)
                counted = True
            except Exception:
                # best-effort: a wrong key, a modified chunk, a key source only executors
                # can use (any provider): let the executors count, so an error reads
                # exactly as a query's would.
                pass
        if not counted:
            found = _count_with_spark(refs_frame())
            for i in missing:
                counts[i] = found.get(i, 0)
        with _lock:
            if len(_cache) > _MAX_CACHE:
                _cache.clear()
            for i in missing:
                _cache[keys[i]] = counts[i]  # type: ignore[assignment]
    return [int(c) for c in counts]  # type: ignore[arg-type]


def _count_with_spark(refs: DataFrame) -> dict[int, int]:
    """Records per partition index, counted by executors (one job over the refs scan)."""
    from pyspark.sql import functions as F

    from ppml_kernel.data.late import REF_SHIFT
    from ppml_kernel.data.spark_source import REF_COLUMN

    rows = (refs.select(F.shiftright(F.col(REF_COLUMN), REF_SHIFT).alias("p"))
            .groupBy("p").count().collect())
    return {int(r["p"]): int(r["count"]) for r in rows}


def ref_frame(spark: SparkSession, counts: Sequence[int]) -> DataFrame:
    """One ``__ppml_ref`` per record, one Spark partition per partition, all in the JVM.

    One ``spark.range`` of ``len(counts) * max(counts)`` ids in ``len(counts)`` slices
    (Range cuts exactly at multiples of ``max(counts)``): id ``p * M + r`` becomes ref
    ``p << 40 | r`` and is kept while ``r < counts[p]``. (A union of one-slice ranges
    would not do: Spark reports such a union as one partition and runs it as one task.)
    """
    from pyspark.sql import functions as F

    from ppml_kernel.data.late import REF_SHIFT
    from ppml_kernel.data.spark_source import REF_COLUMN

    n, m = len(counts), max(counts, default=0)
    if m == 0:
        return spark.range(0, 0, 1, 1).select(F.col("id").alias(REF_COLUMN))
    ids = spark.range(0, n * m, 1, n)
    if any(c != m for c in counts):
        table = ", ".join(str(int(c)) for c in counts)
        ids = ids.where(f"id % {m} < element_at(array({table}), CAST(id DIV {m} AS INT) + 1)")
    return ids.select(F.expr(f"shiftleft(id DIV {m}, {REF_SHIFT}) | (id % {m})")
                      .alias(REF_COLUMN))


def clear() -> None:
    """Forget every cached count (tests)."""
    with _lock:
        _cache.clear()
