"""Which Spark settings ``connect`` adds for Spark's own readers (no JVM started)."""

from __future__ import annotations

import pytest

from ppml_kernel.jvm.jar import ppml_jar
from ppml_kernel.keys.broker.agent import ENV_AGENT
from ppml_kernel.spark.connect import _native_readers

CODECS = "spark.hadoop.io.compression.codecs"
KMS = "spark.hadoop.parquet.encryption.kms.client.class"


@pytest.fixture(autouse=True)
def _native_on(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PPML_NATIVE_PME", raising=False)
    monkeypatch.delenv("PPML_NATIVE_CSV", raising=False)
    assert ppml_jar() is not None, "javac is on PATH here: the kernel's jar must build"


def test_a_cluster_gets_the_readers_with_the_executors_key_agent(monkeypatch):
    monkeypatch.setenv("PYSPARK_PYTHON", "/opt/executor/python")
    conf = _native_readers("spark://10.0.0.1:7077", {"spark.jars": "/x/other.jar"})
    assert conf[f"spark.executorEnv.{ENV_AGENT}"] == "/opt/executor/python"
    assert conf[CODECS] == "ppml.AeadCodec" and conf[KMS] == "ppml.BrokerKmsClient"
    jars = conf["spark.jars"].split(",")
    assert jars[0] == "/x/other.jar" and "ppml-jvm-" in jars[1]  # the user's jars kept
    assert "spark.executor.extraClassPath" not in conf  # shipped, not a host path
    assert "ppml-jvm-" in conf["spark.driver.extraClassPath"]


def test_the_executors_python_follows_spark_pyspark_python():
    conf = _native_readers("k8s://https://api:6443", {"spark.pyspark.python": "/bin/py3"})
    assert conf[f"spark.executorEnv.{ENV_AGENT}"] == "/bin/py3"


def test_local_masters_keep_the_attesting_python_path():
    """local[N]: the executors are the driver JVM, which would reach the kernel's local
    broker without attesting; its Python workers attest instead."""
    assert _native_readers("local[2]", {}) == {}


def test_both_readers_off_means_no_agent(monkeypatch):
    monkeypatch.setenv("PPML_NATIVE_PME", "0")
    monkeypatch.setenv("PPML_NATIVE_CSV", "0")
    assert _native_readers("spark://h:7077", {}) == {}
