"""Spark's own CSV reader on ``ppml-aead/1`` files, through the kernel's Hadoop codec.

``ppml.AeadCodec`` (Java, built by :mod:`ppml_kernel.jvm.jar`) makes Hadoop read any
file whose name ends in ``.ppml`` as the plaintext of a ``ppml-aead/1`` file: the header
is checked, the data key unwrapped by the local key broker, each chunk authenticated
before a byte of it is parsed (the same rules and words as :mod:`.format`). Spark's CSV
reader then runs without a Python worker per task, which is what small tables pay most
for. :func:`native_csv` says when :func:`~ppml_kernel.data.sparkio.read` takes this path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ppml_kernel.data.format import FILE_SUFFIX

CODEC_CLASS = "ppml.AeadCodec"
CODECS_KEY = "spark.hadoop.io.compression.codecs"
#: CSV options Spark's reader understands exactly as the Python path does; any other
#: option (``splitBytes`` too: it asks for the Python path's chunk-range splits) keeps
#: the Python path, so a read never silently changes meaning.
NATIVE_CSV_OPTIONS = frozenset({
    "header", "sep", "delimiter", "quote", "timezone", "keysource", "native",
})
#: Above this much plaintext per core the Python path's column-wise Arrow parsing wins
#: (measured: benchmarks/bench_tpch.py; docs/datasets.md "Native CSV").
NATIVE_CSV_MAX_BYTES_PER_CORE = 8 << 20


def codec_conf() -> dict[str, str]:
    """Spark settings that register the codec with Hadoop (added to the built-in codecs)."""
    return {CODECS_KEY: CODEC_CLASS}


def native_csv_enabled(spark: object) -> bool:
    """Whether this session's Hadoop has the ``ppml-aead/1`` codec."""
    try:
        conf = spark.sparkContext.getConf()  # type: ignore[attr-defined]
        codecs = conf.get(CODECS_KEY) or ""
    except Exception:  # best-effort probe: a stopped context or a stand-in session
        return False
    return CODEC_CLASS in [c.strip() for c in codecs.split(",")]


def native_csv(files: Sequence[str], options: Mapping[str, str], plaintext_bytes: int,
               cores: int) -> bool:
    """Whether Spark's own reader should read these encrypted CSV files.

    Only ``.ppml`` files (the codec is chosen by suffix), only the kernel's key source
    (the executor JVM asks its broker: the kernel's locally, its own attested key agent
    on a cluster), only options both readers mean the same by, and only when
    the data is small enough that the per-task Python runner, not parsing, dominates.
    ``native=true`` forces it (where possible), ``native=false`` refuses it.
    """
    choice = (options.get("native") or "auto").lower()
    if choice == "false" or options.get("keysource", "local") != "local":
        return False
    if any(not f.endswith(FILE_SUFFIX) for f in files):
        return False
    if any(k not in NATIVE_CSV_OPTIONS for k in options):
        return False
    if choice == "true":
        return True
    return plaintext_bytes <= NATIVE_CSV_MAX_BYTES_PER_CORE * max(1, cores)
