"""The key-provider contract and the wrapped data key it trades in.

A :class:`KeyProvider` wraps and unwraps per-file data keys under a key-encryption key
(KEK) named by key id. Where the KEK lives is the provider's business: a key file, the
kernel's in-memory store, or a key broker (the KEK never leaves the driver). The file
format (``ppml_kernel.data.format``), Parquet encryption and both brokers only ever
see :class:`WrappedKey` values, so a new KMS is one more provider.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from ppml_kernel.keys.errors import UnknownKeyError
from ppml_kernel.keys.wrap import WrappedKey, unwrap_with_kek, wrap_with_kek

__all__ = ["KekProvider", "KeyProvider", "WrappedKey"]


class KeyProvider(ABC):
    """Wraps and unwraps data keys under KEKs named by key id."""

    @abstractmethod
    def wrap(self, key_id: str, data_key: bytes, context: bytes) -> WrappedKey:
        """Seal ``data_key`` under KEK ``key_id``; :class:`UnknownKeyError` if absent."""

    @abstractmethod
    def unwrap(self, key_id: str, wrapped: WrappedKey, context: bytes) -> bytes:
        """Open a wrapped data key; raise Unknown/WrongKey/UnwrapError (no file names)."""

    def key_ids(self) -> list[str]:
        """Key ids this provider can use (names only)."""
        return []

    def describe(self) -> str:
        return type(self).__name__


class KekProvider(KeyProvider):
    """A provider that holds KEK bytes itself and wraps locally."""

    @abstractmethod
    def kek(self, key_id: str) -> bytes | None:
        """The KEK for ``key_id`` or None."""

    def _require(self, key_id: str) -> bytes:
        kek = self.kek(key_id)
        if kek is None:
            raise UnknownKeyError(f"no key with key id {key_id!r}", key_id=key_id)
        return kek

    def wrap(self, key_id: str, data_key: bytes, context: bytes) -> WrappedKey:
        return wrap_with_kek(self._require(key_id), key_id, data_key, context)

    def unwrap(self, key_id: str, wrapped: WrappedKey, context: bytes) -> bytes:
        return unwrap_with_kek(self._require(key_id), key_id, wrapped, context)
