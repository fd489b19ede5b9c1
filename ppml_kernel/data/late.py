"""Late materialisation: a DataFrame over encrypted files whose columns Spark can prune.

Spark's Python data sources are not told which columns a query needs, so a plain
``ppml`` scan parses every column, even for ``count()``. This module builds the
DataFrame differently:

    refs scan (one int64 per record: partition << 40 | record number; no parsing)
      -> one Arrow UDF per column, each a :class:`ColumnFunction`

Spark's optimizer drops the UDFs of columns a query does not use, so ``count()``
only counts newlines, ``sum(x)`` parses column ``x`` only, and a group-by parses the
columns it touches. The UDFs are marked non-deterministic so Spark never evaluates a
column twice (it would otherwise push filters below the projection).

On the executor all column functions of one Spark task run in one Python worker. When
Spark unpickles them (before the first call) each registers its column, so the first
call knows the full set and parses exactly those columns once per record batch; later
calls for the same batch read the cached result. Records arrive in order, so each
split is parsed as a stream (:class:`SplitCursor`), in constant memory.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ppml_kernel.data.errors import DatasetError
from ppml_kernel.data.tabular import TableSpec, read_partition

REF_SHIFT = 40
REF_MASK = (1 << REF_SHIFT) - 1

_lock = threading.Lock()
_pending: dict[str, set[str]] = {}
_active: dict[str, frozenset[str]] = {}
_cursors: OrderedDict[tuple[str, int], SplitCursor] = OrderedDict()
_last: dict[str, tuple[int, int, int, pa.Table]] = {}
_MAX_CURSORS = 4


@dataclass(frozen=True)
class ReadPlan:
    """What every column function of one DataFrame shares (pickled with each of them)."""

    token: str
    spec: TableSpec
    partitions: tuple[Any, ...]  # spark_source.PPMLPartition (kept untyped: no pyspark here)
    key_options: Mapping[str, str]
    counts: tuple[int, ...] = ()  # records per partition, counted when the plan was made


class SplitCursor:
    """Parses one split's records in order, for a fixed set of columns."""

    def __init__(self, plan: ReadPlan, index: int, columns: frozenset[str]) -> None:
        self.plan = plan
        self.index = index
        self.columns = columns
        self.names = [n for n in plan.spec.schema.names if n in columns]
        self.target = pa.schema([plan.spec.schema.field(n) for n in self.names])
        self.pos = 0
        self._buf: list[pa.RecordBatch] = []
        self._gen = self._batches()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        from ppml_kernel.keys.registry import provider_for

        provider = provider_for(self.plan.key_options)
        yield from read_partition(self.plan.partitions[self.index], self.plan.spec, provider,
                                  self.names)

    def take(self, start: int, n: int) -> pa.Table:
        """Rows ``[start, start + n)``; ``start`` must not be behind the cursor."""
        if start < self.pos:
            raise _Rewind
        self._skip(start - self.pos)
        out: list[pa.RecordBatch] = []
        need = n
        while need > 0:
            if not self._buf:
                try:
                    self._buf.append(next(self._gen))
                except StopIteration:
                    raise DatasetError(
                        f"record count mismatch in partition {self.index}: counted more "
                        "records than the parser found (multi-line or malformed records?)"
                    ) from None
                continue
            b = self._buf[0]
            if b.num_rows <= need:
                out.append(b)
                self._buf.pop(0)
                need -= b.num_rows
            else:
                out.append(b.slice(0, need))
                self._buf[0] = b.slice(need)
                need = 0
        self.pos = start + n
        if self.plan.counts and self.pos == self.plan.counts[self.index]:
            self._check_exhausted()
        return pa.Table.from_batches(out, schema=self.target) if out else self.target.empty_table()

    def _check_exhausted(self) -> None:
        """The partition holds no record beyond the counted ones (files changed since?)."""
        while not any(b.num_rows for b in self._buf):
            self._buf.clear()
            try:
                self._buf.append(next(self._gen))
            except StopIteration:
                return
        raise DatasetError(
            f"record count mismatch in partition {self.index}: the parser found more records "
            "than were counted when the dataset was loaded (did a file change? load it again)")

    def _skip(self, n: int) -> None:
        while n > 0:
            if not self._buf:
                try:
                    self._buf.append(next(self._gen))
                except StopIteration:
                    raise DatasetError(f"record count mismatch in partition {self.index}") \
                        from None
            b = self._buf[0]
            if b.num_rows <= n:
                self._buf.pop(0)
                n -= b.num_rows
            else:
                self._buf[0] = b.slice(n)
                n = 0


class _Rewind(Exception):
    pass


def _cursor(plan: ReadPlan, index: int, columns: frozenset[str], start: int) -> SplitCursor:
    key = (plan.token, index)
    cur = _cursors.get(key)
    if cur is None or cur.pos > start or not cur.columns >= columns:
        cur = SplitCursor(plan, index, columns)
        _cursors[key] = cur
        while len(_cursors) > _MAX_CURSORS:
            _cursors.popitem(last=False)
    _cursors.move_to_end(key)
    return cur


def _rows(plan: ReadPlan, columns: frozenset[str], index: int, start: int, n: int) -> pa.Table:
    last = _last.get(plan.token)
    if last is not None and last[:3] == (index, start, n) and \
            set(last[3].schema.names) >= columns:
        return last[3]
    cur = _cursor(plan, index, columns, start)
    try:
        table = cur.take(start, n)
    except _Rewind:
        _cursors.pop((plan.token, index), None)
        table = _cursor(plan, index, columns, start).take(start, n)
    _last[plan.token] = (index, start, n, table)
    return table


class ColumnFunction:
    """The callable behind one column's Arrow UDF: refs in, that column's values out."""

    def __init__(self, plan: ReadPlan, column: str) -> None:
        self.plan = plan
        self.column = column
        self.__name__ = f"ppml_{column}"

    def __getstate__(self) -> dict[str, object]:
        return {"plan": self.plan, "column": self.column}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.plan = state["plan"]  # type: ignore[assignment]
        self.column = state["column"]  # type: ignore[assignment]
        self.__name__ = f"ppml_{self.column}"
        with _lock:
            _pending.setdefault(self.plan.token, set()).add(self.column)

    def _columns(self) -> frozenset[str]:
        token = self.plan.token
        with _lock:
            if token in _pending:
                _active[token] = frozenset(_pending.pop(token))
            return _active.get(token, frozenset()) | {self.column}

    def __call__(self, refs):  # type: ignore[no-untyped-def]
        # No annotations on purpose: pyspark reads type hints of callables through
        # typing.get_type_hints, which rejects instances; without hints the UDF is a
        # scalar Arrow UDF (pa.Array in, pa.Array out), which is what this is.
        if isinstance(refs, pa.ChunkedArray):
            refs = refs.combine_chunks()
        field = self.plan.spec.schema.field(self.column)
        if len(refs) == 0:
            return pa.array([], field.type)
        columns = self._columns()
        r = refs.to_numpy(zero_copy_only=False)
        pieces = []
        for lo, hi in _runs(r):
            ref = int(r[lo])
            table = _rows(self.plan, columns, ref >> REF_SHIFT, ref & REF_MASK, hi - lo)
            pieces.extend(table.column(self.column).chunks)
        if len(pieces) == 1:
            return pieces[0]
        return pa.concat_arrays(pieces) if pieces else pa.array([], field.type)


def _runs(r: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges of consecutive refs within one partition."""
    breaks = np.flatnonzero((np.diff(r) != 1) | (np.diff(r >> REF_SHIFT) != 0)) + 1
    bounds = [0, *breaks.tolist(), len(r)]
    return list(itertools.pairwise(bounds))
