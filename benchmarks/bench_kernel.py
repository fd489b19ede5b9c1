"""Foundation benchmark: the PPML kernel against stock ipykernel, side by side.

Runs both kernels alternately in one process run (these machines are noisy) and
prints medians and ratios against the foundation issue's targets:

* cell round trip (``1+1``, 200 executions): ratio <= 1.05
* kernel start to first idle: ratio <= 1.2; idle kernel RSS <= stock + 15 MB
* simulated quote generation + verification: median <= 5 ms

Usage: python benchmarks/bench_kernel.py [--rounds N] [--executions N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

KERNELS = {
    "ppml": [sys.executable, "-m", "ppml_kernel", "-f", "{connection_file}"],
    "stock": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
}


def install_specs(root: Path) -> None:
    for name, argv in KERNELS.items():
        d = root / "kernels" / f"bench-{name}"
        d.mkdir(parents=True)
        spec = {"argv": argv, "display_name": name, "language": "python"}
        if name == "ppml":
            spec["env"] = {"PPML_TEE": "simulated"}
        (d / "kernel.json").write_text(json.dumps(spec))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_once(name: str, executions: int) -> dict[str, float]:
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=f"bench-{name}")
    t0 = time.perf_counter()
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    start = time.perf_counter() - t0
    time.sleep(0.5)
    rss = rss_mb(km.provisioner.pid)
    kc.execute_interactive("0", timeout=60, output_hook=lambda msg: None)  # warm up
    times = []
    for _ in range(executions):
        t = time.perf_counter()
        kc.execute_interactive("1+1", timeout=60, output_hook=lambda msg: None)
        times.append(time.perf_counter() - t)
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    return {"start_s": start, "rss_mb": rss, "roundtrip_ms": statistics.median(times) * 1e3}


def bench_quotes(n: int) -> float:
    from ppml_kernel.attestation import Policy, Verifier
    from ppml_kernel.attestation.selfcheck import simulated_anchor_of
    from ppml_kernel.tee import get_attester

    attester = get_attester("simulated")
    report_data = os.urandom(64)
    collateral = attester.collateral()
    verifier = Verifier(
        Policy(allow_simulated=True), simulated_anchor=simulated_anchor_of(attester)
    )
    assert verifier.verify(attester.quote(report_data), collateral).passed
    times = []
    for _ in range(n):
        t = time.perf_counter()
        result = verifier.verify(attester.quote(report_data), attester.collateral())
        times.append(time.perf_counter() - t)
        assert result.passed
    return statistics.median(times) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="kernel starts per side [5]")
    parser.add_argument("--executions", type=int, default=200, help="1+1 round trips [200]")
    parser.add_argument("--quotes", type=int, default=300, help="quote+verify repetitions [300]")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        install_specs(root)
        os.environ["JUPYTER_PATH"] = str(root)
        os.environ["PPML_SIM_PKI_DIR"] = str(root / "sim-pki")
        results: dict[str, list[dict[str, float]]] = {"ppml": [], "stock": []}
        for i in range(args.rounds):
            order = ("ppml", "stock") if i % 2 == 0 else ("stock", "ppml")
            for name in order:
                results[name].append(run_once(name, args.executions))
                print(f"round {i + 1}/{args.rounds} {name}: {results[name][-1]}", file=sys.stderr)
        quote_ms = bench_quotes(args.quotes)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    rows = [
        ("cell round trip 1+1 (ms)", med("ppml", "roundtrip_ms"), med("stock", "roundtrip_ms")),
        ("start to first idle (s)", med("ppml", "start_s"), med("stock", "start_s")),
        ("idle RSS (MB)", med("ppml", "rss_mb"), med("stock", "rss_mb")),
    ]
    print(f"\n{'metric':<28}{'ppml':>10}{'stock':>10}{'ratio':>8}  target")
    targets = [
        ("ratio <= 1.05", lambda a, b: a / b <= 1.05),
        ("ratio <= 1.2", lambda a, b: a / b <= 1.2),
        ("ppml <= stock + 15 MB", lambda a, b: a <= b + 15),
    ]
    ok = True
    for (label, a, b), (target, check) in zip(rows, targets, strict=True):
        ratio = a / b
        good = check(a, b)
        ok &= good
        print(
            f"{label:<28}{a:>10.3f}{b:>10.3f}{ratio:>8.3f}  {target} {'ok' if good else 'MISSED'}"
        )
    good = quote_ms <= 5
    ok &= good
    print(
        f"{'sim quote + verify (ms)':<28}{quote_ms:>10.3f}{'':>10}{'':>8}  median <= 5 ms "
        f"{'ok' if good else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
