"""A thread-safe name -> value map that shows names only: the base of the in-memory stores.

The kernel keeps two kinds of secrets in memory, browser secrets (text) and key bytes;
both need the same locking and the same rule that listings and reprs show names,
never values. Below every layer: it imports nothing from ppml_kernel.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

V = TypeVar("V")


class NamedValues(Generic[V]):
    """Name -> value under a lock; subclasses decide what a value is and how it is put."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, V] = {}

    def _set(self, name: str, value: V) -> None:
        with self._lock:
            self._values[name] = value

    def _lookup(self, name: str) -> V | None:
        with self._lock:
            return self._values.get(name)

    def delete(self, name: str) -> bool:
        with self._lock:
            return self._values.pop(name, None) is not None

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._values)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._values

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(names={self.names()!r})"
