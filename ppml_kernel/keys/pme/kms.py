"""pyarrow's PME KMS client: master keys are our KEKs, wrapped keys in one shared format.

Parquet modular encryption asks a KMS client to wrap each file's key-encryption key
under a *master key* named by id. Here the master key id is the dataset key id and
the "KMS" is a :class:`~ppml_kernel.keys.provider.KeyProvider`, so pyarrow uses the
same KEKs as ``ppml-aead/1`` files. The wrapped-key text (base64 of a small JSON
document) and the wrapping context are the same as ``java/ppml/BrokerKmsClient.java``
writes, so pyarrow and Spark read each other's files.
"""

from __future__ import annotations

import json

import pyarrow.parquet.encryption as pe

from ppml_kernel.b64 import b64decode, b64encode
from ppml_kernel.keys.provider import KeyProvider
from ppml_kernel.keys.wrap import WrappedKey

CONTEXT = b"ppml parquet modular encryption\x00"


def encode_wrapped(w: WrappedKey) -> str:
    """The wrapped-key text stored in a PME file's key material."""
    doc = {"v": 1, "kcv": w.key_check.hex(), "n": w.nonce.hex(), "c": w.ciphertext.hex()}
    return b64encode(json.dumps(doc).encode())


def decode_wrapped(text: str) -> WrappedKey:
    doc = json.loads(b64decode(text))
    return WrappedKey(bytes.fromhex(doc["kcv"]), bytes.fromhex(doc["n"]), bytes.fromhex(doc["c"]))


class ProviderKmsClient(pe.KmsClient):
    """A PME KMS client whose master keys are the provider's KEKs (by key id)."""

    def __init__(self, provider: KeyProvider) -> None:
        super().__init__()
        self._provider = provider

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        return encode_wrapped(self._provider.wrap(master_key_identifier, bytes(key_bytes),
                                                  CONTEXT))

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        return self._provider.unwrap(master_key_identifier, decode_wrapped(wrapped_key), CONTEXT)
