"""Where the driver's key broker finds keys by id.

The dataset layer keeps KEKs in the kernel's in-memory secret store
(``ppml_kernel.data.secrets``); when that layer is present its store is the
default, so a key loaded with ``%ppml`` is what executors can be granted. Without
it, a process-wide :class:`~ppml_kernel.spark.broker.KeyRing` stands in.
"""

from __future__ import annotations

import threading

from ppml_kernel.spark.broker import KeyRing, KeySource

_FALLBACK: KeyRing | None = None
_LOCK = threading.Lock()


def default_key_source() -> KeySource:
    """The kernel's secret store if the dataset layer is installed, else a shared KeyRing."""
    global _FALLBACK
    try:
        from ppml_kernel.data.secrets import default_store
    except ImportError:
        with _LOCK:
            if _FALLBACK is None:
                _FALLBACK = KeyRing()
            return _FALLBACK
    return default_store()
