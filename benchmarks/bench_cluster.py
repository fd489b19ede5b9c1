"""Cluster benchmark: attested connect against plain connect, and key fetch per worker.

Starts a local standalone cluster (one master, two 1-core workers, simulated enclaves)
and alternates, on the same cluster (these machines are noisy):

* **plain**: :func:`ppml_kernel.spark.connect` with ``attest=False`` (same hardened
  settings), then wait for the executors and run one barrier task on each, so both
  variants end at "every executor has run Python";
* **attested**: :func:`connect` with the attestation sweep (broker, driver quote, one
  probe per executor through the broker).

Target: attested - plain <= 2 s (median). Then, on the attested session, each of many
tasks makes a fresh key client in its (warm) Python worker and fetches a key: nonce,
quote, broker verification, driver-quote verification, unsealing. Target: median
<= 50 ms. Also measured: the cold first fetch in a brand-new Python process (imports,
simulated PKI load, package measurement), and a cached fetch.

Usage: python benchmarks/bench_cluster.py [--rounds N] [--fetches N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEY_ID = "bench-kek"


def fetch_in_task(_: object):
    """Runs on an executor: a new client per task, in a Python worker that is warm."""
    import time

    from ppml_kernel.keys.broker.client import KeyClient, client

    shared = client()
    shared.fetch_key(KEY_ID)  # warm: imports, attester, first attestation
    fresh = KeyClient(attester=shared.attester)
    t0 = time.perf_counter()
    fresh.fetch_key(KEY_ID)
    full = (time.perf_counter() - t0) * 1e3
    t1 = time.perf_counter()
    fresh.fetch_key(KEY_ID)
    cached = (time.perf_counter() - t1) * 1e3
    yield {"full_ms": full, "cached_ms": cached, **fresh.timing.__dict__}


def barrier_job(sc, n: int) -> None:
    sc.parallelize(range(n), n).barrier().mapPartitions(lambda it: [os.getpid()]).collect()


def run_plain(cluster, attester, keys) -> dict[str, float]:
    from ppml_kernel.spark.connect import _wait_for_executors, connect

    t0 = time.perf_counter()
    session = connect(cluster.master_url, attester=attester, keys=keys, attest=False)
    t1 = time.perf_counter()
    sc = session.spark.sparkContext
    ids = _wait_for_executors(sc, len(cluster.workers), 120)
    barrier_job(sc, len(ids))
    t2 = time.perf_counter()
    session.stop()
    return {"session_s": t1 - t0, "ready_s": t2 - t0}


def run_attested(cluster, attester, keys) -> tuple[dict[str, float], object]:
    from ppml_kernel.spark.connect import connect

    t0 = time.perf_counter()
    session = connect(cluster.master_url, attester=attester, keys=keys)
    t1 = time.perf_counter()
    assert session.sweep is not None and len(session.sweep.accepted) == len(cluster.workers), \
        session.sweep
    return {"session_s": session.session_seconds, "ready_s": t1 - t0,
            "sweep_s": session.sweep.seconds}, session


def cold_fetch(broker_address: str, broker_id: str, driver_policy: str, pki: str) -> float:
    """First fetch in a new Python process, imports included (as a fresh Python worker)."""
    code = (
        "import time; t0 = time.perf_counter()\n"
        "from ppml_kernel.keys.broker.client import fetch_key\n"
        f"fetch_key({KEY_ID!r})\n"
        "print((time.perf_counter() - t0) * 1e3)\n"
    )
    env = dict(os.environ, PPML_CLUSTER_BROKER=broker_address, PPML_CLUSTER_BROKER_ID=broker_id,
               PPML_DRIVER_POLICY=driver_policy, PPML_TEE="simulated", PPML_SIM_PKI_DIR=pki)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fetches", type=int, default=40, help="key-fetch tasks")
    parser.add_argument("--cold", type=int, default=5, help="cold fetches in new processes")
    args = parser.parse_args()

    from pyspark import cloudpickle

    from ppml_kernel.keys.store import KeyStore
    from ppml_kernel.spark.localcluster import LocalCluster
    from ppml_kernel.tee.simulated import SimulatedAttester

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    work = Path(tempfile.mkdtemp(prefix="ppml-bench-cluster-"))
    pki = work / "pki"
    os.environ["PPML_SIM_PKI_DIR"] = str(pki)
    attester = SimulatedAttester(pki_dir=pki)
    attester.collateral()
    keys = KeyStore({KEY_ID: os.urandom(32)})
    plain: list[dict[str, float]] = []
    attested: list[dict[str, float]] = []
    fetches: list[dict[str, float]] = []
    cold: list[float] = []
    with LocalCluster(2, cores=1, directory=work / "spark",
                      worker_env={"PPML_TEE": "simulated", "PPML_SIM_PKI_DIR": str(pki)}) as c:
        # Warm-up, not timed: the first session in a process also starts the py4j JVM.
        run_plain(c, attester, keys)
        for i in range(args.rounds):
            order = ("plain", "attested") if i % 2 == 0 else ("attested", "plain")
            for name in order:
                if name == "plain":
                    plain.append(run_plain(c, attester, keys))
                else:
                    result, session = run_attested(c, attester, keys)
                    attested.append(result)
                    if i == args.rounds - 1:  # measure key fetches on the last session
                        sc = session.spark.sparkContext
                        rdd = sc.parallelize(range(args.fetches), args.fetches)
                        fetches = rdd.mapPartitions(fetch_in_task).collect()
                        policy = json.dumps(session.driver_policy.to_dict())
                        cold = [cold_fetch(session.broker.address, session.broker.fingerprint,
                                           policy, str(pki)) for _ in range(args.cold)]
                    session.stop()
                last = (plain if name == "plain" else attested)[-1]
                print(f"round {i + 1} {name}: {json.dumps(last)}", flush=True)

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    plain_ready, att_ready = med(plain, "ready_s"), med(attested, "ready_s")
    extra = att_ready - plain_ready
    full = statistics.median(f["full_ms"] for f in fetches)
    print()
    print(f"plain connect to executors ready   median {plain_ready:6.2f} s "
          f"(session {med(plain, 'session_s'):.2f} s)")
    print(f"attested connect (sweep included)  median {att_ready:6.2f} s "
          f"(session {med(attested, 'session_s'):.2f} s, sweep {med(attested, 'sweep_s'):.2f} s)")
    verdict = "OK" if extra <= 2 else "MISSED"
    print(f"attestation adds                   {extra:+6.2f} s   "
          f"ratio {att_ready / plain_ready:.2f}   target <= +2 s: {verdict}")
    print(f"key fetch per worker (warm worker) median {full:6.1f} ms over {len(fetches)} tasks"
          f"   target <= 50 ms: {'OK' if full <= 50 else 'MISSED'}")
    for part in ("hello_ms", "quote_ms", "attest_ms", "driver_verify_ms"):
        print(f"    {part:<18} median {statistics.median(f[part] for f in fetches):6.1f} ms")
    print(f"cached fetch                       median "
          f"{statistics.median(f['cached_ms'] for f in fetches):8.3f} ms")
    if cold:
        print(f"cold first fetch, new process      median {statistics.median(cold):6.1f} ms "
              "(imports, PKI load, package measurement included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
