"""The one in-memory store of key bytes by key id, and the kernel's instance of it.

The kernel keeps KEKs here (``%ppml keys import``, tests), the default provider and
both key brokers read them from here, and a cluster driver can be handed its own
:class:`KeyStore`. The kernel's store also finds keys the owner sent as browser
secrets (``%ppml secret KEY_ID``, kept as text by :mod:`ppml_kernel.secrets`), in a
key file's JSON, base64 or hex. Nothing here is written to disk, logged or printed:
``repr`` and :meth:`KeyStore.names` show names only.
"""

from __future__ import annotations

import os

from ppml_kernel._named import NamedValues
from ppml_kernel.keys.errors import KeyFileError
from ppml_kernel.keys.files import parse_kek_text, read_key_file
from ppml_kernel.keys.ids import check_key_id, is_key_id
from ppml_kernel.keys.provider import KekProvider, KeyProvider
from ppml_kernel.keys.wrap import KEK_SIZE
from ppml_kernel.secrets import BrowserSecretStore, browser_store


class KeyStore(NamedValues[bytes]):
    """Thread-safe key id -> key bytes; names are visible, values never are."""

    def __init__(self, keys: dict[str, bytes] | None = None) -> None:
        super().__init__()
        for name, value in (keys or {}).items():
            self.put(name, value)

    def put(self, name: str, value: bytes) -> None:
        """Store a key under a valid key id (``KeyIdError`` otherwise)."""
        check_key_id(name)
        if not isinstance(value, (bytes, bytearray)) or not value:
            raise TypeError("a key must be non-empty bytes")
        self._set(name, bytes(value))

    def get(self, name: str) -> bytes | None:
        return self._lookup(name)


class KernelKeyStore(KeyStore):
    """The kernel's store: its own keys, then keys sent as browser secrets of that name."""

    def __init__(self, browser: BrowserSecretStore | None = None) -> None:
        super().__init__()
        self._browser = browser

    @property
    def browser(self) -> BrowserSecretStore:
        return self._browser if self._browser is not None else browser_store()

    def get(self, name: str) -> bytes | None:
        own = super().get(name)
        if own is not None:
            return own
        browser = self.browser
        if name not in browser:
            return None
        return parse_kek_text(browser.get(name))

    def names(self) -> list[str]:
        names = set(super().names())
        browser = self.browser
        for n in browser.names():
            if n in names or not is_key_id(n):  # only names a file header can carry
                continue
            if parse_kek_text(browser.get(n)) is not None:
                names.add(n)
        return sorted(names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


_DEFAULT = KernelKeyStore()


def default_store() -> KeyStore:
    """The process-wide store the kernel's default key provider (and key brokers) read."""
    return _DEFAULT


class KeyStoreProvider(KekProvider):
    """KEKs from an in-memory :class:`KeyStore`, by key id (the in-enclave default)."""

    def __init__(self, store: KeyStore | None = None) -> None:
        self.store = store if store is not None else default_store()

    def kek(self, key_id: str) -> bytes | None:
        value = self.store.get(key_id)
        if value is not None and len(value) != KEK_SIZE:
            raise KeyFileError(f"secret {key_id!r} is not a 32-byte key")
        return value

    def key_ids(self) -> list[str]:
        return self.store.names()

    def describe(self) -> str:
        return "in-memory secrets"


def default_provider() -> KeyProvider:
    """The provider used in the kernel process: the in-memory store."""
    return KeyStoreProvider()


def import_key_file(path: str | os.PathLike[str], store: KeyStore | None = None) -> str:
    """Load a key file into the in-memory store; returns the key id (never the key)."""
    key_id, kek = read_key_file(path)
    (store if store is not None else default_store()).put(key_id, kek)
    return key_id
