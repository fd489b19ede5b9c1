"""A cluster session after a local one: only the attested readers reach the executors.

Its own module (own cluster, own driver JVM): the test needs a driver JVM that started
with the kernel's jar, which the cluster module's sessions do not give it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import conftest_spark
from support.conftest_spark import fresh_driver_jvm

from ppml_kernel.data import sparkio
from ppml_kernel.spark.localcluster import LocalCluster
from ppml_kernel.tee.simulated import SimulatedAttester

# The cluster modules' shared fixtures: the simulated PKI, in the environment per test.
pki = conftest_spark.pki
_cluster_pki = conftest_spark._cluster_pki

pytestmark = [pytest.mark.spark, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("after-local")


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
    them. The cluster must not inherit the local readers' way to keys: here (one host,
    executors descending from this process) executor JVMs found the kernel's local
    broker and read through it, with no attestation and no grant from the cluster's
    broker. On the cluster Spark's own readers get keys only through each executor's
    key agent, which attests; the local broker answers none of their requests."""
    import io

    import pyarrow as pa

    from ppml_kernel.data import format as F
    from ppml_kernel.data.codec import native_csv_enabled
    from ppml_kernel.data.parquet import write_parquet
    from ppml_kernel.keys.broker.agent import ENV_AGENT
    from ppml_kernel.keys.broker.local import local_broker
    from ppml_kernel.keys.files import generate_kek
    from ppml_kernel.keys.pme.names import native_pme_enabled
    from ppml_kernel.keys.store import default_provider, default_store
    from ppml_kernel.spark.connect import connect
    from ppml_kernel.spark.session import get_or_create_session, stop_session

    fresh_driver_jvm()
    local = get_or_create_session("local[1]", {"spark.ui.enabled": "false"})
    assert native_csv_enabled(local) and native_pme_enabled(local)  # the jar is there
    stop_session()
    kernel_broker = local_broker()
    assert kernel_broker is not None
    local_events_before = len(kernel_broker.audit.events())

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
        assert native_csv_enabled(spark) and native_pme_enabled(spark)
        assert conf.get(f"spark.executorEnv.{ENV_AGENT}")
        # The jar reaches executors from the driver, not from a path on their hosts.
        assert "ppml-jvm-" in conf.get("spark.jars", "")
        assert "ppml-jvm-" not in conf.get("spark.executor.extraClassPath", "")
        csv = sparkio.read(spark, root / "csv", "csv", "a int, b string", header=True)
        pq = sparkio.read(spark, root / "pq", "parquet")
        for frame in (csv, pq):  # Spark's own readers, no Python worker
            plan = frame._jdf.queryExecution().executedPlan().toString()
            assert "FileScan" in plan and "ArrowEvalPython" not in plan, plan
        assert sorted(tuple(r) for r in csv.collect()) == [(1, "x"), (2, "y")]
        assert sorted(tuple(r) for r in pq.collect()) == [(3, "z"), (4, "w")]
        grants = session.broker.audit.events("grant")
        assert len([g for g in grants if "before-connect" in g.key_ids]) >= 2
        executor_asks = [e for e in kernel_broker.audit.events()[local_events_before:]
                         if e.executor != f"process {os.getpid()}"]
        assert not executor_asks, [e.line() for e in executor_asks]
    finally:
        session.stop()
        default_store().delete("before-connect")


def test_executors_whose_key_agent_cannot_start_read_nothing(cluster, pki, base):
    """Fail closed: an executor JVM told to use its key agent never falls back to another
    broker. Here the kernel's local broker is running and reachable from the executors
    (same host, started by this process): without the rule they read through it."""
    import io

    from ppml_kernel.data import format as F
    from ppml_kernel.keys.broker.agent import ENV_AGENT
    from ppml_kernel.keys.broker.local import local_broker, start_local_broker
    from ppml_kernel.keys.files import generate_kek
    from ppml_kernel.keys.store import default_provider, default_store
    from ppml_kernel.spark.connect import connect

    kernel_broker = start_local_broker()
    before = len(kernel_broker.audit.events())
    default_store().put("no-agent", generate_kek())
    root = base / "no-agent"
    root.mkdir()
    with open(root / "t.csv.ppml", "wb") as out:
        F.encrypt_stream(io.BytesIO(b"a\n1\n"), out, default_provider(), "no-agent")
    session = connect(cluster.master_url, attester=attester(pki),
                      conf={f"spark.executorEnv.{ENV_AGENT}": str(base / "no-such-python"),
                            "spark.task.maxFailures": "1"})
    try:
        frame = sparkio.read(session.spark, root, "csv", "a int", header=True)
        with pytest.raises(Exception) as info:
            frame.collect()
        assert "cannot start this executor's key agent" in str(info.value)
        assert "no-such-python" in str(info.value)
        assert not session.broker.audit.events("grant")
        assert local_broker() is kernel_broker
        asks = [e for e in kernel_broker.audit.events()[before:]
                if e.executor != f"process {os.getpid()}"]  # the driver's own header check
        assert not asks, [e.line() for e in asks]
        assert session.spark.range(10).count() == 10  # the session stays usable
    finally:
        session.stop()
        default_store().delete("no-agent")
