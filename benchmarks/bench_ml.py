"""Training time on encrypted input against plaintext input, side by side, in one run.

Generates the synthetic loans dataset (``ppml_kernel.data.sample``, default 300,000
rows), writes it as plaintext CSV and Parquet, encrypts the CSV as the data owner would
(ppml-aead/1) and writes PME Parquet, then fits the same MLlib pipelines (feature
assembly + LogisticRegression; feature assembly + GBTClassifier) on each input,
alternating the sides in every round, and prints median fit times and ratios.
Issue 14's goal: encrypted/plaintext <= 1.05x.

MLlib caches its training instances itself, so the input is read (and decrypted) once
per fit; the rest is the same computation on both sides. Fitted models must agree
(same coefficients to 1e-6, same GBT predictions).

Usage: python benchmarks/bench_ml.py [--rows 300000] [--rounds 3] [--cores 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

KEY_ID = "bench-ml"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up")
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ppml_kernel.data import sparkio
    from ppml_kernel.data.format import encrypt_stream
    from ppml_kernel.data.parquet import write_parquet
    from ppml_kernel.data.sample import DDL, FEATURES, LABEL, loans
    from ppml_kernel.keys import files, store

    tmp = Path(tempfile.mkdtemp(prefix="ppml-bench-ml-"))
    os.environ.setdefault("PPML_SIM_PKI_DIR", str(tmp / "pki"))
    try:
        store.default_store().put(KEY_ID, files.generate_kek())
        provider = store.default_provider()
        pdf = loans(args.rows)
        pdf.to_csv(tmp / "loans.csv", index=False)
        with open(tmp / "loans.csv", "rb") as src, open(tmp / "loans.csv.ppml", "wb") as dst:
            encrypt_stream(src, dst, provider, KEY_ID)
        table = pa.Table.from_pandas(pdf, preserve_index=False)
        for d in ("pq-plain", "pq-pme"):
            (tmp / d).mkdir()
        pq.write_table(table, tmp / "pq-plain" / "p.parquet", compression="snappy")
        write_parquet(table, str(tmp / "pq-pme" / "p.parquet"), provider, KEY_ID)
        print(f"data: {args.rows} rows, {(tmp / 'loans.csv').stat().st_size / 1e6:.1f} MB CSV")

        from pyspark.ml import Pipeline
        from pyspark.ml.classification import GBTClassifier, LogisticRegression
        from pyspark.ml.feature import VectorAssembler

        from ppml_kernel.spark.session import get_or_create_session

        spark = get_or_create_session(f"local[{args.cores}]", {
            "spark.driver.memory": "2g", "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": str(2 * args.cores)})
        inputs = {
            "csv-plain": spark.read.schema(DDL).option("header", "true").csv(
                str(tmp / "loans.csv")),
            "csv-ppml": sparkio.read(spark, tmp / "loans.csv.ppml", "csv", DDL, header=True),
            "pq-plain": spark.read.parquet(str(tmp / "pq-plain")),
            "pq-ppml": sparkio.read(spark, tmp / "pq-pme", "parquet"),
        }
        base = {"csv-ppml": "csv-plain", "pq-ppml": "pq-plain"}
        assemble = VectorAssembler(inputCols=FEATURES, outputCol="features")
        models = {
            "logistic regression": lambda: Pipeline(stages=[assemble, LogisticRegression(
                labelCol=LABEL, maxIter=50)]),
            "gradient-boosted trees": lambda: Pipeline(stages=[assemble, GBTClassifier(
                labelCol=LABEL, maxIter=20, maxDepth=5, seed=1)]),
        }
        times: dict[tuple[str, str], list[float]] = {}
        fitted: dict[tuple[str, str], object] = {}
        for rnd in range(args.rounds + 1):
            for mname, make in models.items():
                order = list(inputs) if rnd % 2 == 0 else list(reversed(inputs))
                for side in order:
                    t = time.perf_counter()
                    fitted[(mname, side)] = make().fit(inputs[side])
                    dt = time.perf_counter() - t
                    if rnd:
                        times.setdefault((mname, side), []).append(dt)
            print(f"round {rnd}{' (warm-up)' if not rnd else ''} done", flush=True)

        ok = True
        print(f"\nlocal[{args.cores}], {args.rows} rows: median fit seconds over "
              f"{args.rounds} rounds (ratio encrypted/plaintext, goal <= 1.05x)")
        for mname in models:
            cells = []
            for side, b in base.items():
                r = statistics.median(times[(mname, side)]) / statistics.median(
                    times[(mname, b)])
                cells.append(f"{b} {statistics.median(times[(mname, b)]):6.2f}  {side} "
                             f"{statistics.median(times[(mname, side)]):6.2f} = {r:.3f}x "
                             f"{'MET' if r <= 1.05 else 'MISSED'}")
            print(f"  {mname:<23} " + " | ".join(cells))
        lr = {s: fitted[("logistic regression", s)].stages[-1].coefficients.toArray()
              for s in inputs}
        for s in inputs:
            if max(abs(lr[s] - lr["csv-plain"])) > 1e-6:
                ok = False
                print(f"MODEL DIFFERS: logistic regression on {s}")
        probe = inputs["csv-plain"].limit(5000)
        want = [r[0] for r in fitted[("gradient-boosted trees", "csv-plain")]
                .transform(probe).select("prediction").collect()]
        for s in inputs:
            got = [r[0] for r in fitted[("gradient-boosted trees", s)].transform(probe)
                   .select("prediction").collect()]
            if got != want:
                ok = False
                print(f"MODEL DIFFERS: gradient-boosted trees on {s}")
        print("models: the same on every input" if ok else "models: differences (above)")
        spark.stop()
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
