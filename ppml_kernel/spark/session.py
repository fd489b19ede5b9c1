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
import tempfile
import threading
from collections.abc import Callable, Mapping
from importlib.resources import files
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULT_MASTER = "local[*]"
APP_NAME = "ppml-kernel"

_lock = threading.Lock()
_listeners: list[Callable[[SparkSession], None]] = []


def quiet_log_config() -> str:
    """Path of the bundled log4j2 configuration (warnings, no console banner)."""
    return str(files("ppml_kernel.spark").joinpath("log4j2-quiet.properties"))


def log_path() -> str:
    """This kernel's Spark log: the driver JVM's stdout and stderr, and Spark's own logs.

    Kept out of the notebook (one red line there; ``%ppml spark logs`` shows this file).
    In a private directory: logs hold no keys, but do name files and tables.
    """
    folder = os.path.join(tempfile.gettempdir(), f"ppml-kernel-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return os.path.join(folder, f"spark-{os.getpid()}.log")


def java_options() -> str:
    """Driver JVM options: the quiet log4j configuration."""
    return f"-Dlog4j2.configurationFile=file:{quiet_log_config()}"


def ensure_jvm(conf: Mapping[str, str] | None = None) -> None:
    """Start Spark's driver JVM (once) on a Java we found, its output going to the log file.

    pyspark would start it with the kernel's stderr, so the JVM's start-up warnings and
    every log line would appear in cells. ``conf`` becomes spark-submit ``--conf``
    arguments, as pyspark does with a SparkConf given before the JVM exists.
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    from ppml_kernel.spark.java import ensure_java

    _python_logs_to_file()
    if SparkContext._gateway is not None:
        return
    ensure_java()
    launch_conf = SparkConf(loadDefaults=False)
    for k, v in (conf or {}).items():
        launch_conf.set(k, v)
    opts = launch_conf.get("spark.driver.extraJavaOptions") or ""
    if "log4j2.configurationFile" not in opts:
        launch_conf.set("spark.driver.extraJavaOptions", f"{java_options()} {opts}".strip())
    fd = os.open(log_path(), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as log:
        gateway = launch_gateway(launch_conf, popen_kwargs={"stdout": log, "stderr": log})
    SparkContext._ensure_initialized(gateway=gateway)


def _python_logs_to_file() -> None:
    """pyspark's own Python loggers (a JSON record of every failed query) go to the log file."""
    import logging
    import warnings

    from pyspark.logger import PySparkLogger

    # A failed Arrow conversion also warns, quoting the Python worker's whole traceback,
    # just before the same error is raised: the raise is enough (one line in the magics).
    warnings.filterwarnings("ignore", message=r"(toPandas|createDataFrame) attempted Arrow "
                            r"optimization because .* has reached the error below",
                            category=UserWarning)
    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        logger = PySparkLogger.getLogger(name)
        if any(getattr(h, "baseFilename", None) == log_path() for h in logger.handlers):
            continue
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.addHandler(logging.FileHandler(log_path(), delay=True))
        logger.propagate = False


def on_session(callback: Callable[[SparkSession], None]) -> None:
    """Call ``callback(spark)`` whenever the kernel creates or connects a session.

    The notebook layer uses it to bind ``spark``/``sc`` and to show job progress;
    this module knows nothing about IPython.
    """
    if callback not in _listeners:
        _listeners.append(callback)


def announce(spark: SparkSession) -> None:
    """Tell the :func:`on_session` listeners about ``spark`` (errors never break Spark)."""
    for callback in list(_listeners):
        try:
            callback(spark)
        except Exception:  # boundary: listeners are callbacks; display must not fail a query
            import logging

            logging.getLogger(__name__).debug("session listener failed", exc_info=True)


def session_conf(master: str | None = None, extra: Mapping[str, Any] | None = None
                 ) -> dict[str, str]:
    """The Spark configuration the kernel uses (before ``extra`` overrides)."""
    java_opts = java_options()
    conf = {
        "spark.master": master or os.environ.get("PPML_SPARK_MASTER") or DEFAULT_MASTER,
        "spark.app.name": APP_NAME,
        # The UI has no authentication: keep it (and the driver) on the loopback only.
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": java_opts,
        "spark.sql.session.timeZone": "UTC",
        # Shuffle files, spills and cached blocks hold decrypted rows: never on disk in
        # the clear (an attested cluster sets the same in security.driver_settings).
        "spark.io.encryption.enabled": "true",
        # Fewer, larger Arrow batches for the column functions of encrypted datasets.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "50000",
    }
    conf.update(native_reader_conf())
    for k, v in (extra or {}).items():
        conf[k] = str(v)
    return conf


def native_reader_conf(key_agent: str | None = None) -> dict[str, str]:
    """Settings with which Spark's own readers read our encrypted files (PME Parquet
    through ``ppml.BrokerKmsClient``, ``ppml-aead/1`` CSV through ``ppml.AeadCodec``).

    Empty without the kernel's jar, or when ``$PPML_NATIVE_PME=0`` and
    ``$PPML_NATIVE_CSV=0``. ``key_agent`` (an attested cluster: the executors' Python)
    makes executor JVMs get keys only through their own key agent
    (:mod:`ppml_kernel.keys.broker.agent`), which attests to the driver's key broker.
    """
    native_pme = os.environ.get("PPML_NATIVE_PME", "1") != "0"
    native_csv = os.environ.get("PPML_NATIVE_CSV", "1") != "0"
    if not (native_pme or native_csv):
        return {}
    from ppml_kernel.data.codec import codec_conf
    from ppml_kernel.jvm.jar import classpath_conf, ppml_jar
    from ppml_kernel.keys.broker.agent import ENV_AGENT
    from ppml_kernel.keys.pme.names import pme_conf

    jar = ppml_jar()
    if jar is None:
        return {}
    conf = classpath_conf(jar)
    if native_pme:
        conf.update(pme_conf())
    if native_csv:
        conf.update(codec_conf())
    if key_agent:
        conf[f"spark.executorEnv.{ENV_AGENT}"] = key_agent
    return conf


def forget_local_readers() -> None:
    """Drop the local session's native readers from the driver JVM's defaults.

    The driver JVM keeps the first session's spark-submit settings as system
    properties, and every later SparkContext on it starts from them: a cluster session
    started after a local one inherited the JVM codec, Parquet's broker KMS client and
    the jar on the executors' class path. Its executors have neither the jar nor the
    kernel's local broker socket (on a real cluster every CSV read then failed), and on
    one host they asked the local broker, not the attested one. Cluster executors get
    keys only through attestation, so ``connect`` calls this first and then names the
    readers again with the executors' key agent (:func:`native_reader_conf`); a later
    local session names its settings again itself.
    """
    from pyspark import SparkContext

    from ppml_kernel.data.codec import CODEC_CLASS, CODECS_KEY
    from ppml_kernel.jvm.jar import classpath_conf, ppml_jar
    from ppml_kernel.keys.pme.names import pme_conf

    system = SparkContext._jvm.java.lang.System
    jar = ppml_jar(build=False)
    local_only = {**pme_conf(), **(classpath_conf(jar) if jar is not None else {})}
    for key, value in local_only.items():
        if system.getProperty(key) == value:
            system.clearProperty(key)
    codecs = system.getProperty(CODECS_KEY)
    if codecs is not None:
        rest = ",".join(c for c in codecs.split(",") if c.strip() and c.strip() != CODEC_CLASS)
        if rest:
            system.setProperty(CODECS_KEY, rest)
        else:
            system.clearProperty(CODECS_KEY)


def get_or_create_session(master: str | None = None,
                          conf: Mapping[str, Any] | None = None) -> SparkSession:
    """The active session, or a new one configured by :func:`session_conf`.

    Registers the ``ppml`` data source and starts the local key broker either way.
    """
    from ppml_kernel.keys.broker.local import start_local_broker

    with _lock:
        start_local_broker()  # before the JVM: it inherits PPML_KEY_BROKER
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        created = active is None
        if active is None:
            settings = session_conf(master, conf)
            ensure_jvm(settings)
            settings = loadable_only(settings)
            builder = SparkSession.builder
            for k, v in settings.items():
                builder = builder.config(k, v)
            active = builder.getOrCreate()
            _start_gcm_warm_up()
        from ppml_kernel.data.sparkio import register

        register(active)
    if created:
        announce(active)
    return active


def _jvm_can_load(class_name: str) -> bool:
    from pyspark import SparkContext

    try:
        SparkContext._jvm.java.lang.Class.forName(class_name)
    except Exception:  # best-effort probe: py4j's error for a class not on this class path
        return False
    return True


def _start_gcm_warm_up() -> None:
    """Warm the driver JVM's AES-GCM in the background (``jvm/java/ppml/GcmWarmUp.java``).

    Cold, HotSpot decrypts Parquet's pages at ~60 MB/s for thousands of calls; started
    here, the warm-up runs while the user reads the session's first output rather than
    during their first encrypted query. Executors start theirs on their first read.
    """
    from pyspark import SparkContext

    if _jvm_can_load("ppml.GcmWarmUp"):
        SparkContext._jvm.ppml.GcmWarmUp.start()


def loadable_only(settings: Mapping[str, str]) -> dict[str, str]:
    """``settings`` without our JVM classes that the running JVM cannot load.

    The driver JVM keeps the class path it started with: one started earlier without the
    kernel's jar (a cluster ``connect``, another library) cannot load ``ppml.AeadCodec``,
    and Hadoop fails *every* CSV/text read when a listed codec is missing, so the codec
    and Parquet's KMS client are named only when the JVM has them (readers then keep
    their Python paths).
    """
    from ppml_kernel.data.codec import CODEC_CLASS, CODECS_KEY
    from ppml_kernel.keys.pme.names import CLASS_NAME, pme_conf

    out = dict(settings)
    codecs = [c.strip() for c in out.get(CODECS_KEY, "").split(",") if c.strip()]
    if CODEC_CLASS in codecs and not _jvm_can_load(CODEC_CLASS):
        codecs.remove(CODEC_CLASS)
        if codecs:
            out[CODECS_KEY] = ",".join(codecs)
        else:
            out.pop(CODECS_KEY)
    pme = pme_conf()
    if all(out.get(k) == v for k, v in pme.items()) and not _jvm_can_load(CLASS_NAME):
        for k in pme:
            out.pop(k)
    return out


def stop_session() -> None:
    """Stop the active session (the JVM stays up until the interpreter exits)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()
