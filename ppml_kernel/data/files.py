"""Find a dataset's files and cut them into splits for Spark.

Planning needs no key: the plaintext size of a ``ppml-aead/1`` file follows from its
size and the chunk size in its header, so splits are computed from ``stat`` and 256
header bytes per file. A split is a list of segments (file, plaintext byte range); a
segment of a large file starts on a chunk boundary, and small files are packed
together so a directory of thousands of small files does not become thousands of tasks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ppml_kernel.data.errors import DatasetError
from ppml_kernel.data.format import FILE_SUFFIX, HEADER_SIZE, MIN_CHUNK_SIZE, Layout, read_header
from ppml_kernel.data.sniff import PME_MAGIC

DEFAULT_SPLIT_BYTES = 32 << 20
MIN_SPLIT_BYTES = MIN_CHUNK_SIZE
MAX_SPLIT_BYTES = 512 << 20
# Per-file cost when packing small files, as a fraction of the split size (Spark's
# spark.sql.files.openCostInBytes is 4 MiB for 128 MiB partitions: 1/32).
OPEN_COST_FRACTION = 32


def is_hidden_name(name: str) -> bool:
    """Files Spark and Hadoop write next to data: markers, checksums, temp dirs."""
    return name.startswith((".", "_")) or name.endswith(".crc")


def walk_files(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(file, path relative to path)`` for a file or a directory tree, sorted.

    The one folder walker: the Spark/pandas readers and the data owner's CLI skip the
    same hidden names (Spark's markers, checksums, temp files) in the same order.
    """
    p = os.fspath(path)
    if os.path.isdir(p):
        found = []
        for root, dirs, files in os.walk(p):
            dirs[:] = [d for d in dirs if not is_hidden_name(d)]
            found.extend(os.path.join(root, f) for f in files if not is_hidden_name(f))
        return [(f, os.path.relpath(f, p)) for f in sorted(found)]
    if os.path.isfile(p):
        return [(p, os.path.basename(p))]
    raise DatasetError(f"{p} does not exist")


def list_files(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[str]:
    """Data files under ``paths`` (files or directories, recursively), sorted per path."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = [f for p in paths for f, _ in walk_files(p)]
    if not out:
        raise DatasetError(f"no data files under {', '.join(map(os.fspath, paths))}")
    return out


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    chunk_size: int
    plaintext_size: int


def file_info(path: str) -> FileInfo:
    """Size facts of one ppml-aead file (reads the header only; no key needed)."""
    header = read_header(path)
    size = os.path.getsize(path)
    layout = Layout(header.chunk_size, size)
    plain = layout.plaintext_size if size > HEADER_SIZE else 0
    return FileInfo(path, size, header.chunk_size, max(0, plain))


@dataclass(frozen=True)
class Segment:
    """Plaintext bytes ``[start, end)`` of ``path``; records are owned by start, see records."""

    path: str
    start: int
    end: int
    plaintext_size: int

    @property
    def whole_file(self) -> bool:
        return self.start == 0 and self.end >= self.plaintext_size


@dataclass(frozen=True)
class Split:
    """One Spark partition: segments read in order."""

    segments: tuple[Segment, ...]

    @property
    def nbytes(self) -> int:
        return sum(s.end - s.start for s in self.segments)


def plan_splits(infos: Sequence[FileInfo], split_bytes: int = DEFAULT_SPLIT_BYTES,
                *, splittable: bool = True) -> list[Split]:
    """Cut files into chunk-aligned segments of about ``split_bytes`` and pack small ones."""
    split_bytes = max(MIN_SPLIT_BYTES, min(MAX_SPLIT_BYTES, split_bytes))
    segments: list[Segment] = []
    for info in infos:
        if not splittable or info.plaintext_size <= split_bytes:
            segments.append(Segment(info.path, 0, info.plaintext_size, info.plaintext_size))
            continue
        step = max(info.chunk_size, split_bytes // info.chunk_size * info.chunk_size)
        for start in range(0, info.plaintext_size, step):
            end = min(info.plaintext_size, start + step)
            segments.append(Segment(info.path, start, end, info.plaintext_size))
    splits: list[Split] = []
    current: list[Segment] = []
    current_bytes = 0
    open_cost = split_bytes // OPEN_COST_FRACTION
    for seg in segments:
        cost = seg.end - seg.start + open_cost
        if current and current_bytes + cost > split_bytes:
            splits.append(Split(tuple(current)))
            current, current_bytes = [], 0
        current.append(seg)
        current_bytes += cost
    if current:
        splits.append(Split(tuple(current)))
    return splits


def choose_split_bytes(total_bytes: int, parallelism: int) -> int:
    """Two splits per core (load balance, few tasks), within 4 MiB..128 MiB."""
    parallelism = max(1, parallelism)
    target = total_bytes // (2 * parallelism) if total_bytes else DEFAULT_SPLIT_BYTES
    return max(4 << 20, min(128 << 20, target))


_SUFFIX_FORMATS = (
    (".csv", "csv"), (".tsv", "csv"), (".json", "json"), (".jsonl", "json"),
    (".ndjson", "json"), (".txt", "text"), (".parquet", "parquet"),
)


def guess_format(path: str) -> str:
    """Format from the file name (``x.csv.ppml`` -> csv) or Parquet's PME magic; else csv."""
    name = path.lower().removesuffix(FILE_SUFFIX)
    for suffix, fmt in _SUFFIX_FORMATS:
        if name.endswith(suffix):
            return fmt
    try:
        with open(path, "rb") as f:
            if f.read(len(PME_MAGIC)) == PME_MAGIC:
                return "parquet"
    except OSError:
        pass
    return "csv"
