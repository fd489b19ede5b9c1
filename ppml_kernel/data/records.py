"""Line-oriented records inside encrypted files: who owns which line, counting, streaming.

A split covers plaintext bytes ``(start, end]`` of a file. It owns the records (lines)
that *start* in that range, plus the record at offset 0 for the first split; this is
Hadoop's rule, so adjacent splits agree without talking to each other. A split reads
past ``end`` to finish its last record, and skips the partial record at its start.
"""

from __future__ import annotations

import io

import numpy as np

from ppml_kernel.data.format import EncryptedFile

NL = b"\n"


def owned_span(ef: EncryptedFile, start: int, end: int) -> tuple[int, int]:
    """Plaintext ``[begin, stop)`` of the records owned by the split ``(start, end]``."""
    size = ef.plaintext_size
    begin = 0 if start <= 0 else _after_newline(ef, start)
    stop = size if end >= size else _after_newline(ef, end)
    return begin, max(begin, stop)


def _after_newline(ef: EncryptedFile, pos: int) -> int:
    hit = ef.find(NL, pos)
    return ef.plaintext_size if hit < 0 else hit + 1


def count_lines(ef: EncryptedFile, begin: int, stop: int, *, skip_empty: bool) -> int:
    """Records in ``[begin, stop)``: lines, optionally without empty (or ``\\r``-only) lines.

    Works on each decrypted chunk in place with numpy (newline positions, then line
    lengths from their differences): about as fast as ``bytes.count`` and exact about
    empty lines, including ones that straddle chunk boundaries.
    """
    total = 0
    tail = b"\0\n"  # the last two bytes seen; the range starts right after a newline
    for buf, lo, hi in ef.spans(begin, stop):
        if lo == hi:
            continue
        a = np.frombuffer(buf, dtype=np.uint8, count=hi - lo, offset=lo)
        pos = np.flatnonzero(a == 10)
        total += len(pos)
        if skip_empty and len(pos):
            total -= _empty_lines(a, pos, tail, buf.find(b"\r", lo, hi) >= 0)
        tail = (tail + bytes(buf[max(lo, hi - 2) : hi]))[-2:]
    # An unterminated last line is a record, unless it is a lone "\r" (empty).
    if tail[-1:] != NL and not (skip_empty and tail == b"\n\r"):
        total += 1
    return total


def _empty_lines(a: np.ndarray, pos: np.ndarray, tail: bytes, has_cr: bool) -> int:
    """Empty lines among those ending at ``pos`` (newline offsets in ``a``).

    A line is empty when it has no bytes, or only a ``\\r`` (CRLF files). ``tail`` is
    the two bytes before ``a``: the first line started in ``a`` only if it ends in ``\\n``.
    """
    lead = -1 if tail[-1:] == NL else -(1 << 40)
    prev = np.empty_like(pos)
    prev[0] = lead
    prev[1:] = pos[:-1]
    length = pos - prev - 1
    empty = int(np.count_nonzero(length == 0))
    if has_cr:
        empty += int(np.count_nonzero((length == 1) & (a[np.maximum(pos - 1, 0)] == 13)))
    if pos[0] == 0 and tail == b"\n\r":
        empty += 1  # a "\r" line that started in the previous chunk
    return empty


class RangeStream(io.RawIOBase):
    """Read-only stream over plaintext ``[begin, stop)`` of an encrypted file."""

    def __init__(self, ef: EncryptedFile, begin: int, stop: int) -> None:
        super().__init__()
        self._ef = ef
        self._pos = begin
        self._stop = stop

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        out = memoryview(b).cast("B")
        want = min(len(out), self._stop - self._pos)
        n = 0
        for buf, lo, hi in self._ef.spans(self._pos, self._pos + want):
            out[n : n + hi - lo] = memoryview(buf)[lo:hi]
            n += hi - lo
        self._pos += n
        return n

    def read_all(self) -> bytes:
        """The whole remaining range as one bytes object (one copy per chunk)."""
        parts = bytearray()
        for buf, lo, hi in self._ef.spans(self._pos, self._stop):
            parts += memoryview(buf)[lo:hi]
        self._pos = self._stop
        return bytes(parts)
