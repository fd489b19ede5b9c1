"""One Spark session (local[2]) for the whole test run, plus dataset keys in the kernel store.

Import the fixtures into a test module with
``from support.conftest_spark import spark, data_key  # noqa: F401`` (or list this module in the
root conftest's ``pytest_plugins``). The session starts the local key broker first,
exactly as the kernel does, so executors get keys only through it.

Pytest instantiates a session fixture once per module that imports it, so both fixtures
are idempotent: the key and the session are made once per process.
"""

from __future__ import annotations

import pytest

KEY_ID = "test-key"


@pytest.fixture(scope="session")
def data_key() -> tuple[str, bytes]:
    """A dataset key loaded into the kernel's in-memory secret store."""
    from ppml_kernel.keys.files import generate_kek
    from ppml_kernel.keys.store import default_store

    kek = default_store().get(KEY_ID)
    if kek is None:
        kek = generate_kek()
        default_store().put(KEY_ID, kek)
    return KEY_ID, kek


def fresh_driver_jvm() -> None:
    """Stop this process's Spark context and driver JVM, if any: the next session or
    ``connect`` starts a JVM that sees the caller's environment (a module's PKI) and,
    for a local session, the kernel's jar."""
    import sys

    if "pyspark" not in sys.modules:
        return
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()
    if SparkContext._gateway is not None:
        SparkContext._gateway.shutdown()
        SparkContext._gateway = None
        SparkContext._jvm = None


@pytest.fixture(scope="module")
def pki(base):
    """A cluster module's simulated PKI (under the module's ``base`` directory), also in
    the environment for the whole module: the driver JVM (restarted here, before the
    module's cluster starts) and local-mode Python workers inherit it, and nothing
    touches the user's Jupyter data dir."""
    from ppml_kernel.tee.simulated import SimulatedAttester

    path = base / "pki"
    SimulatedAttester(pki_dir=path).collateral()  # create it once, before workers start
    fresh_driver_jvm()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PPML_SIM_PKI_DIR", str(path))
        mp.setenv("JUPYTER_DATA_DIR", str(base / "jupyter-data"))
        yield path


@pytest.fixture(autouse=True)
def _cluster_pki(isolated_jupyter, pki, monkeypatch: pytest.MonkeyPatch):
    """Each test of a module that imports this sees the module's PKI again
    (``isolated_jupyter`` resets the environment per test)."""
    monkeypatch.setenv("PPML_SIM_PKI_DIR", str(pki))


def _jvm_with_the_kernels_jar() -> None:
    """If a JVM without the kernel's jar is up and idle (test_spark_cluster's connect
    starts one), shut it down so the session below starts one with the jar, as a kernel
    does: modules after it test the JVM codec and PME's KMS client too."""
    import sys

    if "pyspark" not in sys.modules:
        return
    from pyspark import SparkContext

    from ppml_kernel.data.codec import CODEC_CLASS
    from ppml_kernel.spark.session import _jvm_can_load

    if SparkContext._gateway is None or SparkContext._active_spark_context is not None:
        return
    if not _jvm_can_load(CODEC_CLASS):
        SparkContext._gateway.shutdown()
        SparkContext._gateway = None
        SparkContext._jvm = None


@pytest.fixture(scope="session")
def spark(data_key):
    from ppml_kernel.spark.session import get_or_create_session

    _jvm_with_the_kernels_jar()
    session = get_or_create_session(
        "local[2]",
        {
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "4",
            "spark.default.parallelism": "2",
            "spark.driver.memory": "1g",
        },
    )
    return session


def encrypt_to(path, data: bytes, key_id: str = KEY_ID, provider=None, chunk: int = 4096):
    """Write ``data`` to ``path`` as a ppml-aead/1 file (small chunks: many per file)."""
    import io

    from ppml_kernel.data import format as F
    from ppml_kernel.keys.store import default_provider

    with open(path, "wb") as out:
        F.encrypt_stream(io.BytesIO(data), out, provider or default_provider(), key_id, chunk)
    return path
