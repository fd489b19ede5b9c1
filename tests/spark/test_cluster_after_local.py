"""A cluster session after a local one: only the attested readers reach the executors.

Its own module (own cluster, own driver JVM): the test needs a driver JVM that started
with the kernel's jar, which the cluster module's sessions do not give it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.conftest_spark import fresh_driver_jvm

from ppml_kernel.data import sparkio
from ppml_kernel.spark.localcluster import LocalCluster
from ppml_kernel.tee.simulated import SimulatedAttester

pytestmark = [pytest.mark.spark, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("after-local")


@pytest.fixture(scope="module")
def pki(base: Path):
    path = base / "pki"
    SimulatedAttester(pki_dir=path).collateral()
    fresh_driver_jvm()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PPML_SIM_PKI_DIR", str(path))
        mp.setenv("JUPYTER_DATA_DIR", str(base / "jupyter-data"))
        yield path


@pytest.fixture(autouse=True)
def _cluster_pki(isolated_jupyter, pki: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PPML_SIM_PKI_DIR", str(pki))


@pytest.fixture(scope="module")
def cluster(base: Path, pki: Path):
    c = LocalCluster(1, cores=1, directory=base / "spark",
                     worker_env={"PPML_TEE": "simulated", "PPML_SIM_PKI_DIR": str(pki)})
    try:
        c.start()
        yield c
    finally:
        from ppml_kernel.spark.connect import stop

        stop()
        c.stop()


def attester(pki: Path) -> SimulatedAttester:
    return SimulatedAttester(pki_dir=pki)


def test_a_local_session_first_leaves_the_cluster_only_attested_readers(cluster, pki, base):
    """A kernel that ran local Spark before ``connect``: the driver JVM keeps that
    session's spark-submit settings as system properties, and a new SparkConf loads
    them. The cluster must not inherit the local-only native readers (the JVM codec,
    Parquet's broker KMS client, the jar on the executors' class path): on a real cluster
    its executors have neither the jar nor the kernel's local socket, and here (one host,
    executors descending from this process) they read through the local broker, with no
    attestation and no grant from the cluster's broker."""
    import io
    import json

    import pyarrow as pa

    from ppml_kernel.data import format as F
    from ppml_kernel.data.codec import native_csv_enabled
    from ppml_kernel.data.parquet import write_parquet
    from ppml_kernel.keys.files import generate_kek
    from ppml_kernel.keys.pme.names import native_pme_enabled
    from ppml_kernel.keys.store import default_provider, default_store
    from ppml_kernel.spark.connect import connect
    from ppml_kernel.spark.session import get_or_create_session, stop_session

    fresh_driver_jvm()
    local = get_or_create_session("local[1]", {"spark.ui.enabled": "false"})
    assert native_csv_enabled(local) and native_pme_enabled(local)  # the jar is there
    stop_session()

    default_store().put("before-connect", generate_kek())
    root = base / "before-connect"
    (root / "csv").mkdir(parents=True)
    (root / "pq").mkdir()
    with open(root / "csv" / "t.csv.ppml", "wb") as out:
        F.encrypt_stream(io.BytesIO(b"a,b\n1,x\n2,y\n"), out, default_provider(),
                         "before-connect")
    write_parquet(pa.table({"a": [3, 4], "b": ["z", "w"]}), str(root / "pq" / "t.parquet"),
                  default_provider(), "before-connect")
    session = connect(cluster.master_url, attester=attester(pki))
    try:
        spark = session.spark
        conf = dict(spark.sparkContext.getConf().getAll())
        assert not native_csv_enabled(spark) and not native_pme_enabled(spark), json.dumps(conf)
        assert "ppml-jvm-" not in conf.get("spark.executor.extraClassPath", "")
        csv = sparkio.read(spark, root / "csv", "csv", "a int, b string", header=True)
        pq = sparkio.read(spark, root / "pq", "parquet")
        assert sorted(tuple(r) for r in csv.collect()) == [(1, "x"), (2, "y")]
        assert sorted(tuple(r) for r in pq.collect()) == [(3, "z"), (4, "w")]
        grants = session.broker.audit.events("grant")
        assert len([g for g in grants if "before-connect" in g.key_ids]) >= 2
    finally:
        session.stop()
        default_store().delete("before-connect")
