"""Wrapping a data key under a KEK, and the key check value that names a KEK.

``docs/format.md``, "Key slot": from the KEK, HKDF-SHA256 derives a wrapping key and an
8-byte key check value (KCV); the data key is sealed with AES-256-GCM under the
wrapping key, with AAD binding the file's fixed header (``context``), the key id and
the KCV. The KCV lets errors tell "wrong key" apart from "header modified". Every
provider that holds KEK bytes, and both brokers, wrap with these two functions.
"""

from __future__ import annotations

import hmac
import os
import struct
from dataclasses import dataclass

from ppml_kernel import crypto
from ppml_kernel.keys.errors import UnwrapError, WrongKeyError

KEK_SIZE = 32
KEY_CHECK_SIZE = 8
WRAP_NONCE_SIZE = 12
DATA_KEY_SIZES = (16, 24, 32)
_INFO_WRAP = b"ppml-aead/1 kek wrap"
_INFO_CHECK = b"ppml-aead/1 key check"


@dataclass(frozen=True)
class WrappedKey:
    """A data key sealed under a KEK: key check value, wrap nonce and ciphertext+tag."""

    key_check: bytes
    nonce: bytes
    ciphertext: bytes


def key_check_value(kek: bytes) -> bytes:
    """The 8-byte KCV of a KEK: identifies the key without revealing it."""
    return crypto.hkdf_sha256(kek, None, _INFO_CHECK, KEY_CHECK_SIZE)


def _wrapping_key(kek: bytes) -> bytes:
    return crypto.hkdf_sha256(kek, None, _INFO_WRAP, 32)


def _aad(context: bytes, key_id: str, kcv: bytes) -> bytes:
    kid = key_id.encode("ascii")
    return struct.pack(">H", len(context)) + context + struct.pack(">B", len(kid)) + kid + kcv


def wrap_with_kek(kek: bytes, key_id: str, data_key: bytes, context: bytes) -> WrappedKey:
    """Seal ``data_key`` under ``kek`` (see the module docstring)."""
    if len(kek) != KEK_SIZE:
        raise ValueError("a KEK is 32 bytes")
    kcv = key_check_value(kek)
    nonce = os.urandom(WRAP_NONCE_SIZE)
    ct = crypto.aead(_wrapping_key(kek)).encrypt(nonce, data_key, _aad(context, key_id, kcv))
    return WrappedKey(kcv, nonce, ct)


def unwrap_with_kek(kek: bytes, key_id: str, wrapped: WrappedKey, context: bytes) -> bytes:
    """Open a wrapped data key; :class:`WrongKeyError` or :class:`UnwrapError` on failure."""
    kcv = key_check_value(kek)
    if not hmac.compare_digest(kcv, wrapped.key_check):
        raise WrongKeyError(f"key {key_id!r} does not match the key check value", key_id=key_id)
    try:
        key = crypto.aead(_wrapping_key(kek)).decrypt(
            wrapped.nonce, wrapped.ciphertext, _aad(context, key_id, kcv)
        )
    except crypto.InvalidTag:
        raise UnwrapError(f"wrapped key does not authenticate under {key_id!r}",
                          key_id=key_id) from None
    if len(key) not in DATA_KEY_SIZES:
        raise UnwrapError(f"wrapped key under {key_id!r} has the wrong size", key_id=key_id)
    return key
