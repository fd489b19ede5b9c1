"""An in-process, in-memory store of dataset keys (KEKs) by key id.

Keys get here two ways: ``%ppml keys import FILE`` (simulation, teaching) puts bytes in
directly, and secrets sent through the attested browser channel (``%ppml secret NAME``,
kept by :mod:`ppml_kernel.secrets`) are found by name: the kernel's default store looks a
key id up there too when it has no bytes of its own, and accepts the key as the
owner's key file (JSON), base64 or hex. Nothing here is ever written to disk, logged or
printed: ``repr`` and ``names()`` show names only.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading

from ppml_kernel.keys.ids import is_key_id

KEK_BYTES = 32


class SecretStore:
    """Thread-safe name -> bytes map."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, bytes] = {}

    def put(self, name: str, value: bytes) -> None:
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError("a secret value must be bytes")
        with self._lock:
            self._values[name] = bytes(value)

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


def parse_kek_text(text: str) -> bytes | None:
    """32 key bytes from a secret's text: a ppml-key/1 key file, base64 or hex; else None."""
    t = text.strip()
    try:
        if t.startswith("{"):
            doc = json.loads(t)
            if doc.get("format") != "ppml-key/1":
                return None
            t = str(doc.get("key", ""))
        raw = bytes.fromhex(t) if len(t) == 2 * KEK_BYTES else base64.b64decode(t, validate=True)
    except (ValueError, binascii.Error, AttributeError):
        return None
    return raw if len(raw) == KEK_BYTES else None


class KernelKeyStore(SecretStore):
    """The kernel's store: its own keys, then keys sent as browser secrets of that name."""

    @staticmethod
    def _browser() -> object | None:
        try:
            from ppml_kernel.secrets import STORE
        except ImportError:  # the browser channel is not part of this installation
            return None
        return STORE

    def get(self, name: str) -> bytes | None:
        own = super().get(name)
        if own is not None:
            return own
        browser = self._browser()
        if browser is None or name not in browser:  # type: ignore[operator]
            return None
        return parse_kek_text(browser.get(name))  # type: ignore[attr-defined]

    def names(self) -> list[str]:
        names = set(super().names())
        browser = self._browser()
        if browser is not None:
            for n in browser.names():  # type: ignore[attr-defined]
                if n in names or not is_key_id(n):  # only names a file header can carry
                    continue
                if parse_kek_text(browser.get(n)) is not None:  # type: ignore[attr-defined]
                    names.add(n)
        return sorted(names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


_DEFAULT = KernelKeyStore()


def default_store() -> SecretStore:
    """The process-wide store the kernel's default key provider (and key broker) reads."""
    return _DEFAULT
