"""Everything about keys, below ``data`` and ``spark`` (both import it).

* :mod:`~ppml_kernel.keys.provider` - the :class:`KeyProvider` contract and :class:`WrappedKey`
* :mod:`~ppml_kernel.keys.ids` - the one key-id rule
* :mod:`~ppml_kernel.keys.wrap` - wrapping a data key under a KEK, key check values
* :mod:`~ppml_kernel.keys.files` - ``ppml-key/1`` key files
* :mod:`~ppml_kernel.keys.store` - the one in-memory key store (the kernel's)
* :mod:`~ppml_kernel.keys.registry` - providers by name (``keysource``), entry points
* :mod:`~ppml_kernel.keys.broker` - the key brokers (local and attested) and their clients
* :mod:`~ppml_kernel.keys.pme` - Parquet modular encryption's KMS glue (Python and Java)

It imports only ``attestation``, ``tee`` and base modules, and nothing heavy at
import time (names resolve lazily), so a Spark worker or an idle kernel stays light.
"""

from __future__ import annotations

from ppml_kernel._lazy import lazy_exports
from ppml_kernel.keys.errors import DatasetKeyError
from ppml_kernel.keys.ids import KEY_ID_CHARS, KEY_ID_MAX, KeyIdError, check_key_id, is_key_id

_LAZY = {
    "KeyProvider": "ppml_kernel.keys.provider",
    "KekProvider": "ppml_kernel.keys.provider",
    "WrappedKey": "ppml_kernel.keys.wrap",
    "key_check_value": "ppml_kernel.keys.wrap",
    "wrap_with_kek": "ppml_kernel.keys.wrap",
    "unwrap_with_kek": "ppml_kernel.keys.wrap",
    "KeyFileProvider": "ppml_kernel.keys.files",
    "generate_kek": "ppml_kernel.keys.files",
    "read_key_file": "ppml_kernel.keys.files",
    "write_key_file": "ppml_kernel.keys.files",
    "KeyStore": "ppml_kernel.keys.store",
    "KeyStoreProvider": "ppml_kernel.keys.store",
    "default_provider": "ppml_kernel.keys.store",
    "default_store": "ppml_kernel.keys.store",
    "import_key_file": "ppml_kernel.keys.store",
    "provider_for": "ppml_kernel.keys.registry",
    "register_key_source": "ppml_kernel.keys.registry",
}

__all__ = [
    "KEY_ID_CHARS",
    "KEY_ID_MAX",
    "DatasetKeyError",
    "KekProvider",
    "KeyFileProvider",
    "KeyIdError",
    "KeyProvider",
    "KeyStore",
    "KeyStoreProvider",
    "WrappedKey",
    "check_key_id",
    "default_provider",
    "default_store",
    "generate_kek",
    "import_key_file",
    "is_key_id",
    "key_check_value",
    "provider_for",
    "read_key_file",
    "register_key_source",
    "unwrap_with_kek",
    "wrap_with_kek",
    "write_key_file",
]
__getattr__ = lazy_exports(__name__, _LAZY)
