"""The kernel's Spark session: local by default, quiet, bound to localhost, ``ppml``-ready.

pyspark is imported lazily (inside the function) so an idle kernel starts no JVM. The
local key broker starts *before* the JVM, so the JVM and its Python workers inherit
the broker's (non-secret) socket path; keys themselves never enter the Spark conf, the
environment or a command line (see docs/datasets.md, "Keys on executors").

The cluster issue extends this: it adds master URLs, attestation of executors and the
attested key broker (a KeySource) on top of :func:`session_conf`.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from importlib.resources import files
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULT_MASTER = "local[*]"
APP_NAME = "ppml-kernel"

_lock = threading.Lock()


def quiet_log_config() -> str:
    """Path of the bundled log4j2 configuration (errors only, no console banner)."""
    return str(files("ppml_kernel.spark").joinpath("log4j2-quiet.properties"))


def session_conf(master: str | None = None, extra: Mapping[str, Any] | None = None
                 ) -> dict[str, str]:
    """The Spark configuration the kernel uses (before ``extra`` overrides)."""
    java_opts = f"-Dlog4j2.configurationFile=file:{quiet_log_config()}"
    conf = {
        "spark.master": master or os.environ.get("PPML_SPARK_MASTER") or DEFAULT_MASTER,
        "spark.app.name": APP_NAME,
        # The UI has no authentication: keep it (and the driver) on the loopback only.
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": java_opts,
        "spark.sql.session.timeZone": "UTC",
        # Fewer, larger Arrow batches for the column functions of encrypted datasets.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "50000",
    }
    if os.environ.get("PPML_NATIVE_PME", "1") != "0":
        from ppml_kernel.spark.kms import kms_jar, spark_conf

        jar = kms_jar()
        if jar is not None:  # Spark's own Parquet reader then reads encrypted Parquet
            conf.update(spark_conf(jar))
    for k, v in (extra or {}).items():
        conf[k] = str(v)
    return conf


def get_or_create_session(master: str | None = None,
                          conf: Mapping[str, Any] | None = None) -> SparkSession:
    """The active session, or a new one configured by :func:`session_conf`.

    Registers the ``ppml`` data source and starts the local key broker either way.
    """
    from ppml_kernel.data.broker import start_local_broker

    with _lock:
        start_local_broker()  # before the JVM: it inherits PPML_KEY_BROKER
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is None:
            builder = SparkSession.builder
            for k, v in session_conf(master, conf).items():
                builder = builder.config(k, v)
            active = builder.getOrCreate()
            active.sparkContext.setLogLevel("ERROR")
        from ppml_kernel.data.sparkio import register

        register(active)
        return active


def stop_session() -> None:
    """Stop the active session (the JVM stays up until the interpreter exits)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()
