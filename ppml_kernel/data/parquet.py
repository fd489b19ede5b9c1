"""Encrypted Parquet: Parquet Modular Encryption (PME) with keys from a KeyProvider.

PME (the Parquet standard; pyarrow's ``pyarrow.parquet.encryption``) encrypts each
column chunk and the footer with AES-GCM under data keys, which are wrapped by key-
encryption keys, which a KMS client wraps with a *master key* named by id. Here the
"KMS" is our :class:`~ppml_kernel.keys.provider.KeyProvider` and the master key id is the
dataset key id, so the same KEKs, the same secret store and the same Spark key broker
serve both formats. Files use the encrypted-footer mode (magic ``PARE``) with uniform
encryption: nothing, not even the schema, is readable without the key.

PME is the fast columnar path: a reader decrypts only the columns and row groups it
reads. Parquet files wrapped whole in ``ppml-aead/1`` are read too (seekably).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe

from ppml_kernel.data.errors import (
    DatasetError,
    DatasetKeyError,
    NotEncryptedError,
    UnknownKeyError,
    UnwrapError,
    WrongKeyError,
)
from ppml_kernel.data.format import MAGIC, EncryptedFile
from ppml_kernel.data.sniff import PME_MAGIC, describe_foreign
from ppml_kernel.keys.ids import check_key_id
from ppml_kernel.keys.pme.kms import ProviderKmsClient
from ppml_kernel.keys.pme.names import KMS_INSTANCE
from ppml_kernel.keys.provider import KeyProvider


def _factory(provider: KeyProvider) -> pe.CryptoFactory:
    return pe.CryptoFactory(lambda _config: ProviderKmsClient(provider))


def _kms_config() -> pe.KmsConnectionConfig:
    return pe.KmsConnectionConfig(kms_instance_id=KMS_INSTANCE)


def encryption_properties(provider: KeyProvider, key_id: str) -> Any:
    """PME properties: every column and the footer encrypted, master key ``key_id``."""
    check_key_id(key_id)
    config = pe.EncryptionConfiguration(
        footer_key=key_id,
        uniform_encryption=True,
        encryption_algorithm="AES_GCM_V1",
        plaintext_footer=False,
        double_wrapping=True,
        data_key_length_bits=256,
        cache_lifetime=timedelta(minutes=10),
    )
    return _factory(provider).file_encryption_properties(_kms_config(), config)


def decryption_properties(provider: KeyProvider) -> Any:
    config = pe.DecryptionConfiguration(cache_lifetime=timedelta(minutes=10))
    return _factory(provider).file_decryption_properties(_kms_config(), config)


class _KeyIdProbe(pe.KmsClient):
    """A KMS client that only notes which master key a file asks for, and unwraps nothing."""

    def __init__(self, seen: list[str]) -> None:
        super().__init__()
        self._seen = seen

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        raise DatasetError("the key-id probe wraps nothing")

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        self._seen.append(master_key_identifier)
        raise DatasetError("the key-id probe unwraps nothing")


def pme_key_id(path: str) -> str:
    """The master key id a PME file (encrypted footer) needs, without any key.

    It is in the clear in the file's crypto metadata (the footer key's key material);
    pyarrow parses that and asks the KMS client to unwrap under it, which is where the
    probe notes the id and stops. No Spark, no key, no decryption.
    """
    seen: list[str] = []
    factory = pe.CryptoFactory(lambda _config: _KeyIdProbe(seen))
    props = factory.file_decryption_properties(
        _kms_config(), pe.DecryptionConfiguration(cache_lifetime=timedelta(seconds=1)))
    with contextlib.suppress(DatasetError, OSError, pa.ArrowException):
        pq.ParquetFile(path, decryption_properties=props)
    if not seen:
        raise DatasetError(f"{path}: no master key id in its Parquet encryption metadata "
                           "(not Parquet Modular Encryption, or a damaged footer)")
    return check_key_id(seen[0])


def sniff(path: str) -> str:
    """``"pme"`` or ``"aead"`` for the encrypted flavours; raise for anything else."""
    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
        size = os.fstat(f.fileno()).st_size
    if head.startswith(PME_MAGIC):
        return "pme"
    if head == MAGIC:
        return "aead"
    raise NotEncryptedError(
        f"{path} is not an encrypted Parquet file (Parquet Modular Encryption with an "
        f"encrypted footer, or ppml-aead/1): it looks like {describe_foreign(head, size)}"
    )


class EncryptedParquet:
    """An open encrypted Parquet file (either flavour) with pyarrow's ParquetFile API."""

    def __init__(self, path: str, provider: KeyProvider) -> None:
        self.path = path
        self.flavour = sniff(path)
        self._ef: EncryptedFile | None = None
        try:
            if self.flavour == "aead":
                self._ef = EncryptedFile(path, provider)
                self.file = pq.ParquetFile(self._ef.open_plaintext())
            else:
                self.file = pq.ParquetFile(path, decryption_properties=decryption_properties(
                    provider))
        except (DatasetError, OSError, pa.ArrowException) as exc:
            self.close()
            raise _translate(exc, path) from None

    def iter_batches(self, row_groups: Sequence[int], columns: Sequence[str] | None,
                     batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        if not row_groups:
            return
        try:
            yield from self.file.iter_batches(batch_size=batch_rows, row_groups=list(row_groups),
                                              columns=list(columns) if columns else None,
                                              use_threads=False)
        except (DatasetError, OSError, pa.ArrowException) as exc:
            raise _translate(exc, self.path) from None

    def close(self) -> None:
        if self._ef is not None:
            self._ef.close()
            self._ef = None

    def __enter__(self) -> EncryptedParquet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _translate(exc: Exception, path: str) -> DatasetError:
    """Name the file in key errors raised by our KMS client (directly or as pyarrow text)."""
    kid = getattr(exc, "key_id", None) or _key_id_in(str(exc))
    text = str(exc)
    if isinstance(exc, WrongKeyError) or "does not match the key check value" in text:
        return WrongKeyError(f"{path}: wrong key: the key available as {kid!r} is not the key "
                             "this Parquet file was encrypted with", key_id=kid)
    if isinstance(exc, UnknownKeyError) or "no key with key id" in text:
        return UnknownKeyError(f"{path}: no key with key id {kid!r} is available (the Parquet "
                               f"file was encrypted for key id {kid!r})", key_id=kid)
    if isinstance(exc, UnwrapError) or "does not authenticate" in text:
        return UnwrapError(f"{path}: a wrapped key in the Parquet footer does not "
                           f"authenticate under {kid!r} (file modified)", key_id=kid)
    first = text.splitlines()[0][:300] if text else type(exc).__name__
    if isinstance(exc, DatasetError):
        return type(exc)(f"{path}: {first}") if type(exc) in (DatasetError, DatasetKeyError) \
            else exc
    return DatasetError(f"{path}: cannot read encrypted Parquet (modified or corrupt): {first}")


def _key_id_in(text: str) -> str:
    start = text.find("key id '")
    if start < 0:
        start = text.find("key '")
        if start < 0:
            return "?"
        start += len("key '")
    else:
        start += len("key id '")
    end = text.find("'", start)
    return text[start:end] if end > start else "?"


def write_parquet(table_or_batches: pa.Table | Sequence[pa.RecordBatch], path: str,
                  provider: KeyProvider, key_id: str, schema: pa.Schema | None = None,
                  row_group_rows: int = 1 << 20) -> int:
    """Write a PME-encrypted Parquet file; returns the number of rows written."""
    if isinstance(table_or_batches, pa.Table):
        schema = table_or_batches.schema
    elif schema is None:
        raise ValueError("schema is required when writing batches")
    rows = 0
    with pq.ParquetWriter(path, schema, encryption_properties=encryption_properties(
            provider, key_id), compression="snappy") as writer:
        if isinstance(table_or_batches, pa.Table):
            # Row groups of row_group_rows, as pq.write_table makes them (not one per
            # incoming batch): the same layout as a plaintext copy written that way.
            writer.write_table(table_or_batches, row_group_size=row_group_rows)
            return table_or_batches.num_rows
        for b in table_or_batches:
            writer.write_batch(b, row_group_size=row_group_rows)
            rows += b.num_rows
    return rows


class ParquetStreamWriter:
    """Incremental PME writer (for Spark tasks that receive batches one by one)."""

    def __init__(self, path: str, schema: pa.Schema, provider: KeyProvider, key_id: str,
                 row_group_rows: int = 1 << 20) -> None:
        self._writer = pq.ParquetWriter(path, schema, compression="snappy",
                                        encryption_properties=encryption_properties(
                                            provider, key_id))
        self._rg = row_group_rows
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch, row_group_size=self._rg)
        self.rows += batch.num_rows

    def close(self) -> None:
        self._writer.close()
