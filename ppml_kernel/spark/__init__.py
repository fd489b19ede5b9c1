"""Spark on attested executors: hardened sessions, connect, local clusters and display.

The key broker lives in :mod:`ppml_kernel.keys.broker`; ``KeyBroker``, ``fetch_key`` and
``unwrap_key`` are re-exported here for notebooks.

Nothing here imports pyspark until a session is actually made.
"""

from __future__ import annotations

from ppml_kernel._lazy import lazy_exports

_LAZY = {
    "connect": "ppml_kernel.spark.connect",
    "current": "ppml_kernel.spark.connect",
    "stop": "ppml_kernel.spark.connect",
    "status": "ppml_kernel.spark.connect",
    "ClusterSession": "ppml_kernel.spark.connect",
    "ConnectError": "ppml_kernel.spark.connect",
    "KeyBroker": "ppml_kernel.keys.broker.attested",
    "LocalCluster": "ppml_kernel.spark.localcluster",
    "fetch_key": "ppml_kernel.keys.broker.client",
    "unwrap_key": "ppml_kernel.keys.broker.client",
}

__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
