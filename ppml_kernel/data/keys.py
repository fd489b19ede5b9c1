"""Key-encryption keys (KEKs) named by key id, and the providers that use them.

A :class:`KeyProvider` wraps and unwraps per-file data keys under a named KEK. Where
the KEK lives is the provider's business: in a key file (the data owner's tooling and
tests), in the kernel's in-memory secret store (the default inside the enclave), or
behind a key broker (Spark executors; the KEK never leaves the driver). The format
only ever sees :class:`~ppml_kernel.data.format.WrappedKey` values.

Wrapping (``docs/format.md``, "Key slot"): from the KEK, HKDF-SHA256 derives a wrapping
key and an 8-byte key check value (KCV); the data key is sealed with AES-256-GCM under
the wrapping key, with AAD binding the file's fixed header, the key id and the KCV.
The KCV lets errors tell "wrong key" apart from "header modified".
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import stat
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ppml_kernel.data.errors import KeyFileError, UnknownKeyError, UnwrapError, WrongKeyError
from ppml_kernel.data.format import (
    DATA_KEY_SIZE,
    KEY_CHECK_SIZE,
    NONCE_SIZE,
    WrappedKey,
)
from ppml_kernel.data.secrets import SecretStore, default_store
from ppml_kernel.keys.ids import check_key_id

KEK_SIZE = 32
KEY_FILE_FORMAT = "ppml-key/1"
_INFO_WRAP = b"ppml-aead/1 kek wrap"
_INFO_CHECK = b"ppml-aead/1 key check"


def _hkdf(kek: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(kek)


def key_check_value(kek: bytes) -> bytes:
    """The 8-byte KCV of a KEK: identifies the key without revealing it."""
    return _hkdf(kek, _INFO_CHECK, KEY_CHECK_SIZE)


def _aad(context: bytes, key_id: str, kcv: bytes) -> bytes:
    kid = key_id.encode("ascii")
    return struct.pack(">H", len(context)) + context + struct.pack(">B", len(kid)) + kid + kcv


def wrap_with_kek(kek: bytes, key_id: str, data_key: bytes, context: bytes) -> WrappedKey:
    """Seal ``data_key`` under ``kek`` (see the module docstring)."""
    if len(kek) != KEK_SIZE:
        raise ValueError("a KEK is 32 bytes")
    kcv = key_check_value(kek)
    nonce = os.urandom(NONCE_SIZE)
    ct = AESGCM(_hkdf(kek, _INFO_WRAP, 32)).encrypt(nonce, data_key, _aad(context, key_id, kcv))
    return WrappedKey(kcv, nonce, ct)


def unwrap_with_kek(kek: bytes, key_id: str, wrapped: WrappedKey, context: bytes) -> bytes:
    """Open a wrapped data key; :class:`WrongKeyError` or :class:`UnwrapError` on failure."""
    kcv = key_check_value(kek)
    if not hmac.compare_digest(kcv, wrapped.key_check):
        raise WrongKeyError(f"key {key_id!r} does not match the key check value", key_id=key_id)
    try:
        key = AESGCM(_hkdf(kek, _INFO_WRAP, 32)).decrypt(
            wrapped.nonce, wrapped.ciphertext, _aad(context, key_id, kcv)
        )
    except InvalidTag:
        raise UnwrapError(f"wrapped key does not authenticate under {key_id!r}",
                          key_id=key_id) from None
    if len(key) not in (16, 24, DATA_KEY_SIZE):
        raise UnwrapError(f"wrapped key under {key_id!r} has the wrong size", key_id=key_id)
    return key


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


class SecretStoreProvider(KekProvider):
    """KEKs from the kernel's in-memory secret store, by key id (the in-enclave default)."""

    def __init__(self, store: SecretStore | None = None) -> None:
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


# --------------------------------------------------------------------------- key files


def generate_kek() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def write_key_file(path: str | os.PathLike[str], key_id: str, kek: bytes | None = None,
                   *, overwrite: bool = False) -> Path:
    """Create a mode-0600 key file; refuses to replace an existing file unless asked."""
    check_key_id(key_id)
    kek = generate_kek() if kek is None else kek
    if len(kek) != KEK_SIZE:
        raise ValueError("a KEK is 32 bytes")
    doc = {
        "format": KEY_FILE_FORMAT,
        "key_id": key_id,
        "key": base64.b64encode(kek).decode("ascii"),
        "key_check": key_check_value(kek).hex(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    target = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(target, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        raise KeyFileError(f"{target} already exists; not overwriting a key file") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (json.dumps(doc, indent=2) + "\n").encode("ascii"))
    finally:
        os.close(fd)
    return target


def read_key_file(path: str | os.PathLike[str], *, check_mode: bool = True) -> tuple[str, bytes]:
    """Return ``(key_id, kek)`` from a key file, refusing files others can read."""
    target = Path(path)
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise KeyFileError(f"key file {target} does not exist") from None
    except PermissionError:
        raise KeyFileError(f"key file {target} is not readable") from None
    try:
        st = os.fstat(fd)
        if check_mode and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"key file {target} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {target}"
            )
        if check_mode and hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise KeyFileError(f"key file {target} is owned by another user")
        raw = b""
        while chunk := os.read(fd, 65536):
            raw += chunk
            if len(raw) > 65536:
                raise KeyFileError(f"key file {target} is too large to be a key file")
    finally:
        os.close(fd)
    try:
        doc = json.loads(raw)
        if doc.get("format") != KEY_FILE_FORMAT:
            raise ValueError
        key_id = check_key_id(doc["key_id"])
        kek = base64.b64decode(doc["key"], validate=True)
    except Exception:
        # Never chain the parse error: it could quote the file's contents.
        raise KeyFileError(
            f"{target} is not a {KEY_FILE_FORMAT} key file (JSON with key_id and key)"
        ) from None
    if len(kek) != KEK_SIZE:
        raise KeyFileError(f"key file {target}: the key is not 32 bytes")
    return key_id, kek


class KeyFileProvider(KekProvider):
    """KEKs read from one or more key files (data owner's CLI, tests)."""

    def __init__(self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                 *, check_mode: bool = True) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self._keys: dict[str, bytes] = {}
        self.paths = [Path(p) for p in paths]
        for p in self.paths:
            key_id, kek = read_key_file(p, check_mode=check_mode)
            if key_id in self._keys and self._keys[key_id] != kek:
                raise KeyFileError(f"two different keys for key id {key_id!r} (in {p})")
            self._keys[key_id] = kek

    def kek(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)

    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def describe(self) -> str:
        return "key file " + ", ".join(str(p) for p in self.paths)


def import_key_file(path: str | os.PathLike[str], store: SecretStore | None = None) -> str:
    """Load a key file into the in-memory secret store; returns the key id (never the key)."""
    key_id, kek = read_key_file(path)
    (store if store is not None else default_store()).put(key_id, kek)
    return key_id


def default_provider() -> KeyProvider:
    """The provider used in the kernel process: the in-memory secret store."""
    return SecretStoreProvider()
