"""Encrypted datasets against plaintext, side by side, in one run.

Generates a lineitem-like CSV (default 290 MB) in a temporary directory, encrypts it
(ppml-aead/1, 1 MiB chunks) and writes plaintext and PME-encrypted Parquet copies;
then, on local[2], runs each query on each side alternately (these machines are
shared and noisy) and prints medians and ratios against the issue's targets:

* encrypted CSV vs ``spark.read.csv`` (plaintext, same schema):
  group-by <= 1.0x, sum <= 1.1x, count() <= 1.5x
* decryption throughput >= 70% of ``openssl speed -evp aes-256-gcm`` (decrypt, 1 MiB)
* encrypted Parquet (PME) vs plaintext Parquet: reported

"ppml" is :func:`ppml_kernel.data.sparkio.read` (what ``%ppml load`` uses: Spark prunes
its columns); "ppml-ds" is the plain ``spark.read.format("ppml")`` data source, which
parses every column. The temporary directory is deleted at the end.

With ``--cluster 2`` the same queries then run on a standalone cluster on 127.0.0.1
(two workers, the same cores in total, executors attested on connect, data keys only
from the driver's key broker), and the script prints each encrypted/plain ratio next to
its local one; the attested-cluster issue asks that the targets above hold there
within 10%.

Usage: python benchmarks/bench_datasets.py [--size-mb 290] [--rounds 5] [--skip-ds]
       [--skip-parquet] [--cores 2] [--cluster WORKERS]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

SCHEMA = (
    "l_orderkey long, l_partkey long, l_suppkey long, l_linenumber int, l_quantity double, "
    "l_extendedprice double, l_discount double, l_tax double, l_returnflag string, "
    "l_linestatus string, l_shipdate date, l_commitdate date, l_receiptdate date, "
    "l_shipinstruct string, l_shipmode string, l_comment string"
)
KEY_ID = "bench"
_INSTRUCT = np.array(["DELIVER IN PERSON", "COLLECT COD", "NONE", "TAKE BACK RETURN"])
_MODES = np.array(["REG AIR", "AIR", "RAIL", "SHIP", "TRUCK", "MAIL", "FOB"])
_WORDS = np.array([
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "carefully", "final",
    "requests", "deposits", "accounts", "packages", "ironic", "furiously", "regular",
    "express", "pending", "slyly", "bold",
])


def lineitem_batch(rng: np.random.Generator, first_order: int, n: int) -> pa.Table:
    """``n`` TPC-H-like lineitem rows (about 125 bytes each as CSV)."""
    ship = np.datetime64("1992-01-01") + rng.integers(0, 2500, n).astype("timedelta64[D]")
    words = _WORDS[rng.integers(0, len(_WORDS), (n, 4))]
    comment = words[:, 0]
    for i in range(1, 4):
        comment = np.char.add(np.char.add(comment, " "), words[:, i])
    flag = np.where(rng.random(n) < 0.5, "N", np.where(rng.random(n) < 0.5, "A", "R"))
    return pa.table({
        "l_orderkey": pa.array(first_order + np.arange(n) // 4 + 1, pa.int64()),
        "l_partkey": pa.array(rng.integers(1, 200_000, n), pa.int64()),
        "l_suppkey": pa.array(rng.integers(1, 10_000, n), pa.int64()),
        "l_linenumber": pa.array(np.arange(n) % 4 + 1, pa.int32()),
        "l_quantity": pa.array(rng.integers(1, 51, n).astype(float)),
        "l_extendedprice": pa.array(np.round(rng.uniform(900, 105_000, n), 2)),
        "l_discount": pa.array(rng.integers(0, 11, n) / 100),
        "l_tax": pa.array(rng.integers(0, 9, n) / 100),
        "l_returnflag": pa.array(flag),
        "l_linestatus": pa.array(np.where(rng.random(n) < 0.5, "O", "F")),
        "l_shipdate": pa.array(ship),
        "l_commitdate": pa.array(ship + rng.integers(-30, 60, n).astype("timedelta64[D]")),
        "l_receiptdate": pa.array(ship + rng.integers(1, 30, n).astype("timedelta64[D]")),
        "l_shipinstruct": pa.array(_INSTRUCT[rng.integers(0, 4, n)]),
        "l_shipmode": pa.array(_MODES[rng.integers(0, 7, n)]),
        "l_comment": pa.array(comment),
    })


def make_csv(path: Path, target_bytes: int) -> int:
    rng = np.random.default_rng(20240601)
    rows = 0
    writer = None
    with open(path, "wb") as f:
        while f.tell() < target_bytes:
            t = lineitem_batch(rng, rows // 4, 200_000)
            if writer is None:
                writer = pcsv.CSVWriter(f, t.schema, write_options=pcsv.WriteOptions(
                    include_header=True, quoting_style="none"))
            writer.write_table(t)
            rows += t.num_rows
        assert writer is not None
        writer.close()
    return rows


def openssl_decrypt_gbps(seconds: int = 1) -> float | None:
    """``openssl speed -decrypt -evp aes-256-gcm`` at 1 MiB blocks, in GB/s."""
    try:
        out = subprocess.run(
            ["openssl", "speed", "-decrypt", "-evp", "aes-256-gcm", "-bytes", "1048576",
             "-seconds", str(seconds)], capture_output=True, text=True, timeout=60,
            check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"AES-256-GCM\s+([\d.]+)k", out)
    return float(m.group(1)) * 1000 / 1e9 if m else None


def decrypt_gbps(path: Path, provider: object, rounds: int = 3) -> tuple[float, float]:
    """(file decryption through EncryptedFile, AES-GCM alone on the same chunks), GB/s."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from ppml_kernel.data.format import EncryptedFile

    file_rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        with EncryptedFile(path, provider) as ef:  # type: ignore[arg-type]
            n = sum(len(v) for v in ef.chunks())
        file_rates.append(n / (time.perf_counter() - t) / 1e9)
    aead = AESGCM(os.urandom(32))
    nonce, aad = os.urandom(12), os.urandom(41)
    sealed = aead.encrypt(nonce, os.urandom(1 << 20), aad)
    out = bytearray(1 << 20)
    crypto_rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(256):
            aead.decrypt_into(nonce, sealed, aad, out)
        crypto_rates.append(256 * (1 << 20) / (time.perf_counter() - t) / 1e9)
    return max(file_rates), max(crypto_rates)


def q_count(df):
    return df.count()


def q_sum(df):
    from pyspark.sql import functions as F

    return df.agg(F.sum("l_extendedprice")).collect()[0][0]


def q_group(df):
    from pyspark.sql import functions as F

    rows = (
        df.where(F.col("l_shipdate") <= "1998-09-02")
        .groupBy("l_returnflag", "l_linestatus")
        .agg(F.sum("l_quantity").alias("q"), F.sum("l_extendedprice").alias("p"),
             F.avg("l_discount").alias("d"), F.count("*").alias("n"))
        .collect()
    )
    return sorted(tuple(r) for r in rows)


def same(a: object, b: object) -> bool:
    """Equal, with floats compared to 1e-9 relative (sums depend on partitioning)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


QUERIES: dict[str, Callable] = {"count": q_count, "sum": q_sum, "group-by": q_group}


TARGETS = {"count": 1.5, "sum": 1.1, "group-by": 1.0}
Times = dict[tuple[str, str, str], list[float]]


def build_sides(spark, paths: dict[str, Path], args: argparse.Namespace) -> dict[str, dict]:
    """The DataFrames to compare, by format then side ("plain", "ppml", "ppml-ds")."""
    from ppml_kernel.data import sparkio

    sides: dict[str, dict[str, object]] = {"csv": {}, "parquet": {}}
    sides["csv"]["plain"] = spark.read.schema(SCHEMA).option("header", "true").csv(
        str(paths["plain_csv"]))
    sides["csv"]["ppml"] = sparkio.read(spark, paths["enc_csv"], "csv", SCHEMA, header=True)
    if not args.skip_ds:
        sides["csv"]["ppml-ds"] = (spark.read.format("ppml").schema(SCHEMA)
                                   .option("format", "csv").option("header", "true")
                                   .load(str(paths["enc_csv"])))
    if not args.skip_parquet:
        sides["parquet"]["plain"] = spark.read.parquet(str(paths["plain_pq"]))
        sides["parquet"]["ppml"] = sparkio.read(spark, paths["enc_pq"], "parquet")
        if not args.skip_ds:
            sides["parquet"]["ppml-ds"] = (spark.read.format("ppml")
                                           .option("format", "parquet")
                                           .load(str(paths["enc_pq"])))
    return {fmt: dfs for fmt, dfs in sides.items() if dfs}


def time_queries(sides: dict[str, dict], rounds: int, label: str) -> tuple[Times, dict]:
    """Every query on every side, alternating, one untimed warm-up round first."""
    times: Times = {}
    answers: dict[tuple[str, str, str], object] = {}
    for rnd in range(rounds + 1):
        for qname, q in QUERIES.items():
            for fmt, dfs in sides.items():
                for side, df in dfs.items():
                    t = time.perf_counter()
                    answers[(fmt, qname, side)] = q(df)
                    dt = time.perf_counter() - t
                    if rnd:
                        times.setdefault((fmt, qname, side), []).append(dt)
        print(f"{label}: round {rnd}{' (warm-up)' if not rnd else ''} done", flush=True)
    return times, answers


def ratios(times: Times) -> dict[tuple[str, str, str], float]:
    """Median time of each non-plain side over the plain side's median, same format/query."""
    out = {}
    for (fmt, qname, side), values in times.items():
        if side != "plain":
            out[(fmt, qname, side)] = (statistics.median(values)
                                       / statistics.median(times[(fmt, qname, "plain")]))
    return out


def report(title: str, sides: dict[str, dict], times: Times, answers: dict,
           rounds: int) -> bool:
    """Print medians and ratios; False if a CSV target is missed or a result differs."""
    ok = True
    for fmt, dfs in sides.items():
        print(f"\n{title}, {fmt}: median seconds over {rounds} rounds (ratio to plain)")
        for qname in QUERIES:
            base = statistics.median(times[(fmt, qname, "plain")])
            cells = [f"plain {base:6.2f}"]
            for side in dfs:
                if side == "plain":
                    continue
                med = statistics.median(times[(fmt, qname, side)])
                ratio = med / base
                mark = ""
                if fmt == "csv" and side == "ppml":
                    good = ratio <= TARGETS[qname]
                    ok &= good
                    mark = f" {'OK ' if good else 'MISS'} (target <= {TARGETS[qname]}x)"
                agree = same(answers[(fmt, qname, side)], answers[(fmt, qname, "plain")])
                cells.append(f"{side} {med:6.2f} = {ratio:4.2f}x{mark}"
                             f"{'' if agree else ' RESULT DIFFERS'}")
                ok &= agree
            print(f"  {qname:<9} " + " | ".join(cells))
    return ok


def compare_cluster(local: Times, cluster: Times, local_answers: dict,
                    cluster_answers: dict) -> bool:
    """The issue's check: the local query ratios hold on the attested cluster within 10%."""
    ok = True
    local_r, cluster_r = ratios(local), ratios(cluster)
    print("\nattested cluster against local[2]: ratio encrypted/plain, each measured side by "
          "side in its own setting")
    for key in sorted(cluster_r):
        fmt, qname, side = key
        if side != "ppml":
            continue
        lr, cr = local_r[key], cluster_r[key]
        line = f"  {fmt:<7} {qname:<9} local {lr:4.2f}x  cluster {cr:4.2f}x"
        line += f"  cluster/local {cr / lr:4.2f}"
        if fmt == "csv":
            # Two readings of "within 10%": the cluster ratio is at most 10% above the
            # local one, and the target, widened by 10%, still holds.
            limit = TARGETS[qname] * 1.1
            held, close = cr <= limit, cr <= lr * 1.1
            ok &= held
            line += (f" {'OK ' if close else 'OVER'} (<= 1.10)  target {TARGETS[qname]}x "
                     f"+ 10% = {limit:.2f}x {'OK' if held else 'MISS'}")
        agree = same(cluster_answers[(fmt, qname, "plain")], local_answers[(fmt, qname, "plain")])
        ok &= agree
        print(line + ("" if agree else "  RESULT DIFFERS FROM LOCAL"))
    return ok


def run_cluster(paths: dict[str, Path], args: argparse.Namespace, work: Path) -> tuple:
    """Same queries on a standalone cluster on 127.0.0.1, keys only through the broker."""
    from ppml_kernel.spark.connect import connect
    from ppml_kernel.spark.localcluster import LocalCluster
    from ppml_kernel.tee.simulated import SimulatedAttester

    pki = Path(os.environ["PPML_SIM_PKI_DIR"])
    cores = max(1, args.cores // args.cluster)
    with LocalCluster(args.cluster, cores=cores, memory="2g", executor_memory="1g",
                      directory=work / "spark",
                      worker_env={"PPML_TEE": "simulated", "PPML_SIM_PKI_DIR": str(pki)}) as c:
        session = connect(c.master_url, attester=SimulatedAttester(pki_dir=pki))
        try:
            sweep = session.sweep
            accepted = len(sweep.accepted) if sweep else 0
            print(f"\ncluster: {c.master_url}, {args.cluster} workers x {cores} core(s), "
                  f"{accepted} executor(s) attested, connect "
                  f"{session.connect_seconds:.2f} s", flush=True)
            if accepted != args.cluster:
                raise SystemExit(f"attestation sweep did not accept every executor: {sweep}")
            sides = build_sides(session.spark, paths, args)
            times, answers = time_queries(sides, args.rounds, "cluster")
            grants = session.broker.audit.events("grant")
            refusals = session.broker.audit.events("refuse")
            print(f"key broker: {len(grants)} grant(s), {len(refusals)} refusal(s)")
            return sides, times, answers
        finally:
            session.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=290)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up")
    ap.add_argument("--cores", type=int, default=2,
                    help="cores: local[N], and N in total over the cluster's workers")
    ap.add_argument("--cluster", type=int, default=0, metavar="WORKERS",
                    help="then run the same queries on a standalone cluster of this many "
                         "workers on 127.0.0.1 (attested connect, keys from the broker) "
                         "and compare the ratios")
    ap.add_argument("--skip-ds", action="store_true", help="skip the plain data source")
    ap.add_argument("--skip-parquet", action="store_true")
    args = ap.parse_args()

    from ppml_kernel.data.format import encrypt_stream
    from ppml_kernel.data.parquet import write_parquet
    from ppml_kernel.keys import files, store

    tmp = Path(tempfile.mkdtemp(prefix="ppml-bench-"))
    # A simulated PKI of this run's own, for local-mode workers, the driver and the cluster.
    os.environ.setdefault("PPML_SIM_PKI_DIR", str(tmp / "pki"))
    try:
        store.default_store().put(KEY_ID, files.generate_kek())
        provider = store.default_provider()
        paths = {"plain_csv": tmp / "lineitem.csv", "enc_csv": tmp / "lineitem.csv.ppml",
                 "plain_pq": tmp / "parquet-plain", "enc_pq": tmp / "parquet-pme"}
        t = time.perf_counter()
        rows = make_csv(paths["plain_csv"], int(args.size_mb * 1e6))
        size = paths["plain_csv"].stat().st_size
        print(f"data: {rows} rows, {size / 1e6:.0f} MB CSV ({time.perf_counter() - t:.1f} s)")
        t = time.perf_counter()
        with open(paths["plain_csv"], "rb") as src, open(paths["enc_csv"], "wb") as dst:
            encrypt_stream(src, dst, provider, KEY_ID)
        print(f"encrypt: {size / (time.perf_counter() - t) / 1e9:.2f} GB/s (to disk)")

        # Alternate the two measurements and keep the best of each: the machine is shared,
        # and interference only ever lowers a throughput.
        refs, files_, cryptos = [], [], []
        for _ in range(3):
            refs.append(openssl_decrypt_gbps() or 0.0)
            file_rate, crypto_rate = decrypt_gbps(paths["enc_csv"], provider)
            files_.append(file_rate)
            cryptos.append(crypto_rate)
        ref, file_rate, crypto_rate = max(refs), max(files_), max(cryptos)
        print(f"decrypt (best of 3): file {file_rate:.2f} GB/s, AES-GCM alone "
              f"{crypto_rate:.2f} GB/s, openssl speed {ref:.2f} GB/s")
        if ref:
            print(f"  file decryption = {file_rate / ref:.0%} of openssl (target >= 70%)")

        if not args.skip_parquet:
            table = pcsv.read_csv(paths["plain_csv"])
            paths["plain_pq"].mkdir()
            paths["enc_pq"].mkdir()
            pq.write_table(table, paths["plain_pq"] / "part-0.parquet",
                           row_group_size=250_000, compression="snappy")
            write_parquet(table, str(paths["enc_pq"] / "part-0.parquet"), provider, KEY_ID,
                          row_group_rows=250_000)
            del table

        from ppml_kernel.spark.session import get_or_create_session

        spark = get_or_create_session(f"local[{args.cores}]", {"spark.driver.memory": "2g"})
        sides = build_sides(spark, paths, args)
        times, answers = time_queries(sides, args.rounds, f"local[{args.cores}]")
        ok = report(f"local[{args.cores}]", sides, times, answers, args.rounds)
        spark.stop()
        if args.cluster:
            c_sides, c_times, c_answers = run_cluster(paths, args, tmp)
            ok &= report("attested cluster", c_sides, c_times, c_answers, args.rounds)
            ok &= compare_cluster(times, c_times, answers, c_answers)
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    sys.exit(main())
