"""A real Spark standalone cluster on 127.0.0.1 with simulated enclaves.

One master and two workers (started with ``spark-class`` by the module fixture) share
this test's simulated PKI. The driver runs in the pytest process. Each test connects
with :func:`ppml_kernel.spark.connect`, so everything real is exercised: the hardened
settings, the key broker, the barrier-stage sweep, executors pulling keys over HTTP.
The dataset is sealed with AES-GCM under a KEK that only the broker holds.
"""

from __future__ import annotations

import base64
import os
import sys
import time
from pathlib import Path

import pytest
from support import conftest_spark

from ppml_kernel.data import sparkio
from ppml_kernel.keys.store import KeyStore
from ppml_kernel.spark.localcluster import LocalCluster
from ppml_kernel.tee.simulated import SimulatedAttester

# The cluster modules' shared fixtures: the simulated PKI, in the environment per test.
pki = conftest_spark.pki
_cluster_pki = conftest_spark._cluster_pki

pytestmark = [pytest.mark.spark, pytest.mark.timeout(900)]

KEY_ID = "cluster-kek"
KEK = bytes.fromhex("5f" * 8 + "a1" * 8 + "0c" * 8 + "e7" * 8)
PARTS = 4
ROWS_PER_PART = 250


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cluster")


@pytest.fixture(scope="module")
def cluster(base: Path, pki: Path):
    c = LocalCluster(
        2,
        cores=1,
        directory=base / "spark",
        worker_env={"PPML_TEE": "simulated", "PPML_SIM_PKI_DIR": str(pki)},
    )
    try:
        c.start()
        yield c
    finally:
        from ppml_kernel.spark.connect import stop

        stop()
        c.stop()
        time.sleep(1)
        assert not _processes_mentioning(str(c.directory)), "Spark processes were left behind"


@pytest.fixture(scope="module")
def dataset(base: Path) -> tuple[list[str], dict[str, tuple[float, int]]]:
    """Sealed CSV parts (AES-256-GCM under KEK) and the expected group-by from plaintext."""
    import pandas as pd
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    folder = base / "sealed"
    folder.mkdir()
    frames, paths = [], []
    for part in range(PARTS):
        ids = range(part * ROWS_PER_PART, (part + 1) * ROWS_PER_PART)
        frame = pd.DataFrame(
            {
                "id": list(ids),
                "grp": [f"g{i % 5}" for i in ids],
                "value": [round((i * 7919) % 1000 / 10, 1) for i in ids],
            }
        )
        frames.append(frame)
        name = f"part-{part}.sealed"
        nonce = os.urandom(12)
        blob = AESGCM(KEK).encrypt(nonce, frame.to_csv(index=False).encode(), name.encode())
        (folder / name).write_bytes(nonce + blob)
        paths.append(str(folder / name))
    plain = pd.concat(frames).groupby("grp")["value"].agg(["sum", "count"])
    expected = {g: (round(float(r["sum"]), 6), int(r["count"])) for g, r in plain.iterrows()}
    return paths, expected


def decrypt_partition(paths):
    """Runs on executors: the KEK comes only from the driver's key broker."""
    import csv
    import io

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from ppml_kernel.keys.broker.client import fetch_key

    aead = AESGCM(fetch_key(KEY_ID))
    for path in paths:
        blob = Path(path).read_bytes()
        text = aead.decrypt(blob[:12], blob[12:], Path(path).name.encode()).decode()
        for row in csv.DictReader(io.StringIO(text)):
            yield int(row["id"]), row["grp"], float(row["value"])


def run_query(spark, paths: list[str]) -> dict[str, tuple[float, int]]:
    from pyspark import cloudpickle
    from pyspark.sql import functions as F

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    rdd = spark.sparkContext.parallelize(paths, len(paths)).mapPartitions(decrypt_partition)
    df = spark.createDataFrame(rdd, "id long, grp string, value double")
    rows = df.groupBy("grp").agg(F.sum("value").alias("s"), F.count("*").alias("n")).collect()
    return {r["grp"]: (round(r["s"], 6), r["n"]) for r in rows}


def attester(pki: Path, **kw) -> SimulatedAttester:
    return SimulatedAttester(pki_dir=pki, **kw)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _forms(secret: bytes) -> list[bytes]:
    return [secret, secret.hex().encode(), base64.b64encode(secret)]


def _files_containing(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits += [f"{path}" for n in needles if n in data]
    return hits


@pytest.fixture(scope="module")
def good(cluster, pki, base):
    """A session on the two honest workers, with an event log to inspect afterwards."""
    from ppml_kernel.spark.connect import connect

    events = base / "events"
    events.mkdir()
    session = connect(
        cluster.master_url,
        attester=attester(pki),
        keys=KeyStore({KEY_ID: KEK}),
        conf={"spark.eventLog.enabled": "true", "spark.eventLog.dir": events.as_uri()},
        audit_path=base / "audit.jsonl",
    )
    yield session, events
    session.stop()


# -- the honest cluster ---------------------------------------------------------------


def test_connect_hardens_the_session_and_attests_every_executor(good):
    session, _ = good
    sweep = session.sweep
    assert sweep is not None
    assert len(sweep.executors) == 2 and len(sweep.accepted) == 2 and not sweep.refused
    assert not sweep.missing and not sweep.excluded
    assert {r.executor_id for r in sweep.accepted} == set(sweep.executors)
    html = session._repr_html_()
    assert "SIMULATED" in html and "accepted" in html and "measurement" in html
    report = session.security
    for name in (
        "RPC authentication",
        "RPC encryption",
        "I/O encryption",
        "Web UI",
        "Python worker socket",
        "Key broker",
    ):
        assert report.level(name) == "good", name
    assert report.level("Event log") == "warn"  # this test turned it on to inspect it
    conf = dict(session.spark.sparkContext.getConf().getAll())
    assert conf["spark.network.crypto.cipher"] == "AES/GCM/NoPadding"
    assert conf["spark.network.crypto.authEngineVersion"] == "2"
    assert conf["spark.io.encryption.enabled"] == "true"


def test_query_with_broker_keys_equals_local_result(good, dataset):
    session, _ = good
    paths, expected = dataset
    assert run_query(session.spark, paths) == expected
    grants = session.broker.audit.events("grant")
    assert grants and all(g.key_ids == (KEY_ID,) for g in grants)
    assert {g.executor.split(" on ")[0] for g in grants} <= {
        f"executor {i}" for i in session.executor_ids()
    }


def test_auth_secret_is_on_no_command_line_and_in_no_conf(good, cluster):
    session, _ = good
    secret = cluster.auth_secret
    offenders = _processes_mentioning(secret)
    assert not offenders, f"RPC secret on the command line of pids {offenders}"
    spark = session.spark
    assert secret not in repr(spark.sparkContext.getConf().getAll())
    sql_conf = spark.conf.getAll
    assert secret not in repr(sql_conf() if callable(sql_conf) else sql_conf)
    jvm_props = spark.sparkContext._jvm.java.lang.System.getProperties().toString()
    assert secret not in jvm_props


def test_no_data_key_in_executor_environments_logs_or_event_logs(good, cluster, dataset):
    session, events = good
    run_query(session.spark, dataset[0])  # make sure executors hold the key now
    needles = _forms(KEK)
    leaked_env = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes()
            except OSError:
                continue
            leaked_env += [entry.name for n in needles if n in env]
    assert not leaked_env, f"data key in the environment of pids {leaked_env}"
    executor_logs = list(cluster.directory.rglob("stderr"))
    assert executor_logs, "expected executor logs under the workers' work dirs"
    # Daemon and executor logs, work dirs and conf: no data key, and no RPC secret either.
    assert not _files_containing(cluster.directory, [*needles, cluster.auth_secret.encode()])
    audit_file = Path(session.broker.audit.path)
    session.stop()  # flushes the event log
    logged = list(events.rglob("*"))
    assert any(p.is_file() and p.stat().st_size > 0 for p in logged), "no event log written"
    assert not _files_containing(events, [*needles, cluster.auth_secret.encode()])
    assert audit_file.read_text() and not _files_containing(audit_file.parent, needles)


# -- executors that must get nothing --------------------------------------------------


def test_out_of_date_executors_get_no_key_and_the_job_names_them(cluster, pki, dataset):
    from ppml_kernel.spark.connect import connect

    session = connect(
        cluster.master_url,
        attester=attester(pki),
        keys=KeyStore({KEY_ID: KEK}),
        conf={"spark.executorEnv.PPML_SIM_TCB_STATUS": "OutOfDate", "spark.task.maxFailures": "2"},
    )
    try:
        sweep = session.sweep
        assert sweep is not None and len(sweep.refused) == 2 and not sweep.accepted
        assert not sweep.excluded  # nobody left to run jobs: keep them so jobs fail loudly
        for row in sweep.refused:
            assert "tcb_status is OutOfDate" in row.reason
        with pytest.raises(Exception) as info:
            run_query(session.spark, dataset[0])
        text = str(info.value)
        assert "KeyRefusedError" in text
        assert "refused this executor" in text and "tcb_status is OutOfDate" in text
        named = [i for i in session.executor_ids() if f"executor {i} on 127.0.0.1" in text]
        assert named, "the job's error does not name the executor"
        assert not session.broker.audit.events("grant")
        # The driver stays usable.
        assert session.spark.range(100).selectExpr("sum(id)").first()[0] == 4950
    finally:
        session.stop()


def test_rogue_host_is_refused_named_and_excluded(cluster, pki, base, dataset):
    from ppml_kernel.spark.connect import connect

    rogue_pki = base / "rogue-pki"
    rogue = cluster.add_worker({"PPML_SIM_PKI_DIR": str(rogue_pki)}, name="rogue-host")
    try:
        session = connect(cluster.master_url, attester=attester(pki), keys=KeyStore({KEY_ID: KEK}))
        try:
            sweep = session.sweep
            assert sweep is not None and len(sweep.executors) == 3
            rogue_ids = {
                p.name for p in (rogue.work_dir).glob("app-*/*") if session.app_id in str(p)
            }
            assert len(rogue_ids) == 1
            (rogue_id,) = rogue_ids
            assert [r.executor_id for r in sweep.refused] == [rogue_id]
            refused = sweep.refused[0]
            assert "root that is not trusted" in refused.reason
            assert f"executor {rogue_id}" in refused.executor
            assert f"executor {rogue_id}" in repr(sweep)
            assert len(sweep.accepted) == 2 and sweep.excluded == [rogue_id]
            assert run_query(session.spark, dataset[0]) == dataset[1]
            granted = {g.executor for g in session.broker.audit.events("grant")}
            assert not any(f"executor {rogue_id} " in g for g in granted)
        finally:
            session.stop()
    finally:
        cluster.stop_worker(rogue)


# -- the dataset layer's `ppml` data source on the attested cluster -------------------


def test_ppml_data_source_reads_and_writes_through_the_broker(cluster, pki, base):
    """Encrypted write and read with the dataset layer, keys only via the attested broker.

    Executors select this broker through ``PPML_KEYSOURCE=attested``.
    """
    import importlib

    import pandas as pd

    from ppml_kernel.spark.connect import connect

    kek = importlib.import_module("ppml_kernel.keys.files").generate_kek()
    default_store = importlib.import_module("ppml_kernel.keys.store").default_store
    default_store().put("cluster-sales", kek)
    session = connect(cluster.master_url, attester=attester(pki))
    try:
        spark = session.spark
        frame = pd.DataFrame(
            {
                "id": range(3000),
                "grp": [f"g{i % 7}" for i in range(3000)],
                "v": [i * 0.5 for i in range(3000)],
            }
        )
        target = base / "ppml-sales"
        sparkio.write(
            spark.createDataFrame(frame).repartition(3), target, key="cluster-sales", format="csv"
        )
        back = sparkio.read(spark, target, format="csv", schema="id long, grp string, v double")
        got = {
            r["grp"]: r["s"]
            for r in back.groupBy("grp")
            .agg({"v": "sum"})
            .withColumnRenamed("sum(v)", "s")
            .collect()
        }
        assert got == frame.groupby("grp")["v"].sum().to_dict()
        kinds = {g.reason for g in session.broker.audit.events("grant")}
        assert {"wrap", "unwrap"} <= kinds  # the KEK itself was never granted
        assert not _files_containing(target, _forms(kek))
    finally:
        session.stop()
        default_store().delete("cluster-sales")


def test_local_mode_gets_the_same_protection(cluster, pki, dataset):
    """local[N]: Spark makes the RPC secret; Python workers still attest for keys."""
    from ppml_kernel.spark.connect import connect

    session = connect("local[2]", attester=attester(pki), keys=KeyStore({KEY_ID: KEK}))
    try:
        assert session.sweep is not None and len(session.sweep.accepted) == 1
        assert session.security.level("RPC authentication") == "good"
        assert "generated by Spark" in repr(session.security)
        assert run_query(session.spark, dataset[0]) == dataset[1]
        assert session.broker.audit.events("grant")
    finally:
        session.stop()


def test_a_cluster_in_a_kept_directory_waits_for_its_own_workers(base, pki):
    """Daemon logs append in a kept directory (``bench_tpch --work``). The cluster took
    an earlier run's "registered" line for this run's, deleted the properties file (it
    holds the secret) before the daemons had read it, and they died: the benchmark's
    cluster then failed with "All masters are unresponsive"."""
    from ppml_kernel.spark.localcluster import READY_LINE

    directory = base / "kept"
    (directory / "logs").mkdir(parents=True)
    log = directory / "logs" / "worker-1.log"
    log.write_text(f"26/12/07 13:05:41 INFO Worker: {READY_LINE} spark://earlier:7077\n")
    with LocalCluster(1, cores=1, directory=directory,
                      worker_env={"PPML_TEE": "simulated", "PPML_SIM_PKI_DIR": str(pki)}) as c:
        assert log.read_text().count(READY_LINE) == 2  # this run's, when start() returned
        assert c.master is not None and c.master.alive()
        assert all(w.alive() for w in c.workers)
