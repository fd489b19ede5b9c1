"""TPC-H, all 22 queries, on encrypted data against plaintext, side by side, in one run.

Generates the 8 tables with ``tpchgen-cli`` at ``--sf`` into a temporary directory,
encrypts them as the data owner would (``ppml-kernel encrypt``: ppml-aead/1 CSV; Parquet
Modular Encryption for Parquet; see ``benchmarks/tpch/__init__.py``), then runs every
query (``benchmarks/tpch/q*.sql``) on each side, alternating the sides within each
round (the machines are shared and noisy), and prints per-query medians, the ratio
encrypted/plaintext per query and their geometric mean:

* CSV:     ``sparkio.read`` on ppml-aead CSV (``%ppml load``) vs ``spark.read.csv``
  (small tables go through Spark's own CSV reader and the JVM codec, large ones through
  the Python path: docs/datasets.md; ``--csv-paths`` also times the Python path alone
  as ``csv-py``, to show where each wins)
* Parquet: ``sparkio.read`` on PME Parquet vs ``spark.read.parquet`` on plaintext Parquet

Every encrypted result must equal the plaintext result row for row (decimals exact, in
the query's order); a difference fails the run. Issue 14's goals (local[2]): CSV
geometric mean <= 1.0x, PME Parquet <= 1.10x, no query above 1.5x.

With ``--cluster N`` the same then runs on an attested standalone cluster of N workers
on 127.0.0.1 (executors attested on connect, data keys only from the driver's key
broker) and the script prints each format's geometric mean next to its local one.

Usage: python benchmarks/bench_tpch.py [--sf 0.1] [--rounds 3] [--cores 2]
       [--cluster WORKERS] [--ds] [--csv-paths] [--queries 1,6,14]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tpch  # the shared TPC-H helpers and queries (benchmarks/tpch/)

BASE = {"csv-ppml": "csv-plain", "csv-py": "csv-plain", "csv-ds": "csv-plain",
        "pq-ppml": "pq-plain", "pq-ds": "pq-plain"}
GOALS = {"csv-ppml": 1.0, "pq-ppml": 1.10}
MAX_QUERY_RATIO = 1.5
Times = dict[tuple[str, int], list[float]]


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def run_all(spark: Any, roots: dict[str, Path], sides: list[str], numbers: list[int],
            rounds: int, label: str, warmup: int = 1) -> tuple[Times, list[str]]:
    """Every query on every side, ``rounds`` timed rounds after ``warmup`` untimed ones."""
    from tqdm import tqdm

    texts = tpch.queries()
    tables = {s: tpch.load_side(spark, s, roots) for s in sides}
    times: Times = {}
    problems: list[str] = []
    with tqdm(total=(rounds + warmup) * len(numbers) * len(sides), desc=label, unit="query",
              file=sys.stderr, dynamic_ncols=True) as bar:
        for rnd in range(rounds + warmup):
            for n in numbers:
                results = {}
                order = sides if rnd % 2 == 0 else list(reversed(sides))
                for side in order:
                    bar.set_postfix_str(f"round {rnd}{' (warm-up)' if rnd < warmup else ''} "
                                        f"q{n} {side}")
                    t = time.perf_counter()
                    results[side] = tpch.run_query(spark, tables[side], texts[n])
                    dt = time.perf_counter() - t
                    if rnd >= warmup:
                        times.setdefault((side, n), []).append(dt)
                    bar.update()
                for side, base in BASE.items():
                    if side in results and results[side] != results[base]:
                        problems.append(f"{label}: q{n} on {side} differs from {base}")
    return times, problems


def report(label: str, times: Times, sides: list[str], numbers: list[int]) -> dict[str, float]:
    """Per-query medians and ratios, then the geometric mean of each encrypted side."""
    med = {k: statistics.median(v) for k, v in times.items()}
    enc = [s for s in sides if s in BASE]
    print(f"\n{label}: median seconds per query (ratio to its plaintext side)")
    head = "query " + "".join(f"{s:>11}" for s in sides if s not in BASE)
    head += "".join(f"{s:>11}{'ratio':>7}" for s in enc)
    print(head)
    ratios: dict[str, list[float]] = {s: [] for s in enc}
    for n in numbers:
        line = f"q{n:<5}" + "".join(f"{med[(s, n)]:11.2f}" for s in sides if s not in BASE)
        for s in enc:
            r = med[(s, n)] / med[(BASE[s], n)]
            ratios[s].append(r)
            flag = "!" if r > MAX_QUERY_RATIO else " "
            line += f"{med[(s, n)]:11.2f}{r:6.2f}{flag}"
        print(line)
    gm = {s: geomean(v) for s, v in ratios.items()}
    totals = {s: sum(med[(s, n)] for n in numbers) for s in sides}
    print("total " + "".join(f"{totals[s]:11.1f}" for s in sides if s not in BASE)
          + "".join(f"{totals[s]:11.1f}{totals[s] / totals[BASE[s]]:6.2f} " for s in enc))
    for s in enc:
        goal = GOALS.get(s)
        worst = max(ratios[s])
        verdict = "" if goal is None else (f"  goal <= {goal:.2f}x "
                                           f"{'MET' if gm[s] <= goal else 'MISSED'}")
        print(f"geometric mean {s} / {BASE[s]}: {gm[s]:.3f}x{verdict}; worst query "
              f"q{numbers[ratios[s].index(worst)]} {worst:.2f}x "
              f"({'none' if worst <= MAX_QUERY_RATIO else 'some'} above {MAX_QUERY_RATIO}x)")
    return gm


def run_cluster(roots: dict[str, Path], args: argparse.Namespace, work: Path, sides: list[str],
                numbers: list[int]) -> tuple[dict[str, float], list[str]]:
    """The same on a standalone cluster on 127.0.0.1; keys only through the key broker."""
    from ppml_kernel.spark.connect import connect
    from ppml_kernel.spark.localcluster import LocalCluster
    from ppml_kernel.tee.simulated import SimulatedAttester

    pki = Path(os.environ["PPML_SIM_PKI_DIR"])
    cores = max(1, args.cores // args.cluster)
    with LocalCluster(args.cluster, cores=cores, memory="2g", executor_memory="1g",
                      directory=work / "spark",
                      worker_env={"PPML_TEE": "simulated", "PPML_SIM_PKI_DIR": str(pki)}) as c:
        session = connect(c.master_url, attester=SimulatedAttester(pki_dir=pki),
                          conf={"spark.sql.shuffle.partitions": str(args.shuffle)})
        try:
            sweep = session.sweep
            accepted = len(sweep.accepted) if sweep else 0
            print(f"\ncluster: {c.master_url}, {args.cluster} workers x {cores} core(s), "
                  f"{accepted} executor(s) attested", flush=True)
            if accepted != args.cluster:
                raise SystemExit(f"attestation sweep did not accept every executor: {sweep}")
            times, problems = run_all(session.spark, roots, sides, numbers, args.rounds,
                                      "cluster", args.warmup)
            gm = report(f"attested cluster ({args.cluster} workers)", times, sides, numbers)
            grants = session.broker.audit.events("grant")
            print(f"key broker: {len(grants)} grant(s), "
                  f"{len(session.broker.audit.events('refuse'))} refusal(s)")
            return gm, problems
        finally:
            session.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sf", type=float, default=0.1, help="TPC-H scale factor")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    ap.add_argument("--cores", type=int, default=2,
                    help="cores: local[N], and N in total over the cluster's workers")
    ap.add_argument("--shuffle", type=int, default=0,
                    help="spark.sql.shuffle.partitions (default: 2 x cores)")
    ap.add_argument("--parts", type=int, default=0, help="files per table (default: by SF)")
    ap.add_argument("--cluster", type=int, default=0, metavar="WORKERS")
    ap.add_argument("--ds", action="store_true",
                    help="also time spark.read.format('ppml') (parses every column)")
    ap.add_argument("--csv-paths", action="store_true",
                    help="also time sparkio.read's Python path for CSV (native=False)")
    ap.add_argument("--formats", default="csv,parquet")
    ap.add_argument("--queries", default="", help="comma-separated query numbers (default all)")
    ap.add_argument("--work", help="keep the data in this directory (default: a temporary "
                    "one, deleted at the end)")
    args = ap.parse_args()
    args.shuffle = args.shuffle or 2 * args.cores
    numbers = [int(q) for q in args.queries.split(",") if q] or list(range(1, 23))
    formats = [f for f in args.formats.split(",") if f]
    sides: list[str] = []
    if "csv" in formats:
        sides += ["csv-plain", "csv-ppml"] + (["csv-py"] if args.csv_paths else []) \
            + (["csv-ds"] if args.ds else [])
    if "parquet" in formats:
        sides += ["pq-plain", "pq-ppml"] + (["pq-ds"] if args.ds else [])

    from ppml_kernel.keys.store import import_key_file

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ppml-tpch-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PPML_SIM_PKI_DIR", str(work / "pki"))
    try:
        key_file = tpch.key_file(work)
        if not (work / "enc_csv").exists() and not (work / "enc_pq").exists():
            tpch.prepare(work, args.sf, key_file, args.parts or None, formats)
        else:
            print(f"reusing the data in {work}")
        import_key_file(key_file)  # the analyst's kernel holds the key; executors ask the broker

        from ppml_kernel.spark.session import get_or_create_session

        spark = get_or_create_session(f"local[{args.cores}]", {
            "spark.driver.memory": "2g", "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": str(args.shuffle)})
        print(f"TPC-H SF {args.sf}, local[{args.cores}], {len(numbers)} queries, "
              f"{args.rounds} timed round(s) after {args.warmup} warm-up round(s), "
              f"shuffle partitions "
              f"{args.shuffle}", flush=True)
        times, problems = run_all(spark, roots_of(work), sides, numbers, args.rounds,
                                  f"local[{args.cores}]", args.warmup)
        local_gm = report(f"local[{args.cores}] SF {args.sf}", times, sides, numbers)
        spark.stop()
        if args.cluster:
            cluster_gm, more = run_cluster(roots_of(work), args, work, sides, numbers)
            problems += more
            print("\ngeometric means, attested cluster against local:")
            for s, g in cluster_gm.items():
                print(f"  {s:<9} local {local_gm[s]:.3f}x  cluster {g:.3f}x  "
                      f"cluster/local {g / local_gm[s]:.2f} "
                      f"({'within' if g <= local_gm[s] * 1.1 else 'OVER'} 10%)")
        for p in problems:
            print(f"RESULT DIFFERS: {p}")
        print("results: every encrypted query equals its plaintext query" if not problems
              else f"results: {len(problems)} difference(s)")
        return 1 if problems else 0
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def roots_of(work: Path) -> dict[str, Path]:
    return {k: work / k for k in ("plain_csv", "enc_csv", "plain_pq", "enc_pq")}


if __name__ == "__main__":
    sys.exit(main())
