"""An in-process, in-memory store of secrets by name.

Inside the kernel this is where dataset keys (KEKs) live once they arrive; the browser
channel (attested, end-to-end encrypted) will feed it, replacing the key-file import
used until then. Nothing here is ever written to disk, logged or printed: ``repr`` and
``names()`` show names only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class SecretStore:
    """Thread-safe name -> bytes map; listeners hear names (never values) on change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, bytes] = {}
        self._listeners: list[Callable[[str], None]] = []

    def put(self, name: str, value: bytes) -> None:
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError("a secret value must be bytes")
        with self._lock:
            self._values[name] = bytes(value)
            listeners = list(self._listeners)
        for fn in listeners:
            fn(name)

    def get(self, name: str) -> bytes | None:
        with self._lock:
            return self._values.get(name)

    def delete(self, name: str) -> bool:
        with self._lock:
            found = self._values.pop(name, None) is not None
        return found

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
        return f"<SecretStore names={self.names()!r}>"

    def on_change(self, fn: Callable[[str], None]) -> None:
        with self._lock:
            self._listeners.append(fn)


_DEFAULT = SecretStore()


def default_store() -> SecretStore:
    """The process-wide store the kernel's default key provider reads."""
    return _DEFAULT
