"""Encrypted datasets: the ``ppml-aead/1`` format, keys, and Spark/pandas access.

* :mod:`~ppml_kernel.data.format` - the file format (docs/format.md)
* key providers, key files and the key store live in :mod:`ppml_kernel.keys`
* :mod:`~ppml_kernel.data.sparkio` - ``read``/``write`` with Spark (pyspark imported lazily)
* :mod:`~ppml_kernel.data.pandas_io` - small data straight into pandas
* :mod:`~ppml_kernel.data.spark_source` - the ``ppml`` Spark data source
"""

from __future__ import annotations

from ppml_kernel._lazy import lazy_exports
from ppml_kernel.data.errors import (
    CorruptFileError,
    DatasetError,
    DatasetKeyError,
    NotEncryptedError,
    TamperedChunkError,
    UnknownKeyError,
    WrongKeyError,
)
from ppml_kernel.data.format import (
    EncryptedFile,
    decrypt_stream,
    encrypt_stream,
    read_header,
    rewrap_file,
)
from ppml_kernel.keys.files import KeyFileProvider, generate_kek, write_key_file
from ppml_kernel.keys.provider import KeyProvider
from ppml_kernel.keys.store import KeyStoreProvider, default_provider, import_key_file

_LAZY = {
    "read_pandas": "ppml_kernel.data.pandas_io",
    "write_pandas": "ppml_kernel.data.pandas_io",
    "read_table": "ppml_kernel.data.pandas_io",
    "read_spark": ("ppml_kernel.data.sparkio", "read"),
    "write_spark": ("ppml_kernel.data.sparkio", "write"),
}

__all__ = [
    "CorruptFileError",
    "DatasetError",
    "DatasetKeyError",
    "EncryptedFile",
    "KeyFileProvider",
    "KeyProvider",
    "KeyStoreProvider",
    "NotEncryptedError",
    "TamperedChunkError",
    "UnknownKeyError",
    "WrongKeyError",
    "decrypt_stream",
    "default_provider",
    "encrypt_stream",
    "generate_kek",
    "import_key_file",
    "read_header",
    "read_pandas",
    "read_spark",
    "read_table",
    "rewrap_file",
    "write_key_file",
    "write_pandas",
    "write_spark",
]
__getattr__ = lazy_exports(__name__, _LAZY)
