"""Sealed sessions: what sealing costs, side by side in one process run.

Against the sealed-sessions issue's goals (medians over alternating rounds):

* a sealed cell round trip through the Python sealed client vs stock ipykernel with
  jupyter_client: <= 1.10x (and vs the same PPML kernel unsealed);
* a cell with a 10 MB output (an HTML table-sized string), sealed vs unsealed on the
  same kernel: <= 1.2x.

The browser's round trip (headless Chromium, sealed vs unsealed) is printed by the
extension's end-to-end test (`jlpm test:e2e`, line "sealed round trip").

Usage: python benchmarks/bench_sealed.py [--rounds N] [--executions N] [--mb N]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_kernel import install_specs


def start(name: str) -> tuple[Any, Any]:
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=f"bench-{name}")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    return km, kc


def plain(kc: Any, code: str) -> int:
    """Execute unsealed; wait for idle and the reply; return the output bytes seen."""
    msg_id = kc.execute(code)
    size = 0
    while True:
        msg = kc.get_iopub_msg(timeout=120)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
        size += len(json.dumps(msg["content"]))
    while True:
        try:
            reply = kc.get_shell_msg(timeout=120)
        except queue.Empty:
            raise TimeoutError(code) from None
        if reply["parent_header"].get("msg_id") == msg_id:
            return size


def sealed(client: Any, code: str) -> int:
    result = client.execute(code, timeout=120, allow_stdin=False)
    return sum(len(json.dumps(m["content"])) for m in result.outputs)


def timed(run: Any, target: Any, code: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        run(target, code)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--executions", type=int, default=100)
    parser.add_argument("--mb", type=float, default=10.0, help="size of the large output")
    args = parser.parse_args()

    from ppml_kernel.channel.sealed_client import SealedKernelClient

    tmp = Path(tempfile.mkdtemp(prefix="bench-sealed-"))
    install_specs(tmp)
    os.environ["JUPYTER_PATH"] = str(tmp)
    os.environ["PPML_SIM_PKI_DIR"] = str(tmp / "pki")
    big = int(args.mb * 1_000_000)
    setup = f"from IPython.display import HTML, display\nBIG = HTML('<td>x</td>' * ({big} // 9))"
    show = "display(BIG)"

    rt: dict[str, list[float]] = {"stock": [], "ppml unsealed": [], "ppml sealed": []}
    large: dict[str, list[float]] = {"stock": [], "ppml unsealed": [], "ppml sealed": []}
    stock_km, stock_kc = start("stock")
    ppml_km, ppml_kc = start("ppml")
    try:
        client = SealedKernelClient(ppml_kc, allow_simulated=True)
        client.attest()
        for kc in (stock_kc, ppml_kc):
            plain(kc, setup)
            plain(kc, "0")
        sealed(client, "0")
        for r in range(args.rounds):
            rt["stock"] += timed(plain, stock_kc, "1+1", args.executions)
            rt["ppml unsealed"] += timed(plain, ppml_kc, "1+1", args.executions)
            rt["ppml sealed"] += timed(sealed, client, "1+1", args.executions)
            large["stock"] += timed(plain, stock_kc, show, 2)
            large["ppml unsealed"] += timed(plain, ppml_kc, show, 2)
            large["ppml sealed"] += timed(sealed, client, show, 2)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for km, kc in ((stock_km, stock_kc), (ppml_km, ppml_kc)):
            kc.stop_channels()
            km.shutdown_kernel(now=True)

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    print(f"\ncell round trip, 1+1 ({args.rounds} x {args.executions}, medians)")
    for name, xs in rt.items():
        print(f"  {name:14s} {med(xs):8.2f} ms")
    r1 = med(rt["ppml sealed"]) / med(rt["stock"])
    r2 = med(rt["ppml sealed"]) / med(rt["ppml unsealed"])
    print(f"  sealed / stock ipykernel   {r1:5.2f}x   (goal <= 1.10x)")
    print(f"  sealed / unsealed (same)   {r2:5.2f}x")
    print(f"\n{args.mb:g} MB output (display of an HTML string, {args.rounds} x 2, medians)")
    for name, xs in large.items():
        print(f"  {name:14s} {med(xs):8.1f} ms")
    r3 = med(large["ppml sealed"]) / med(large["ppml unsealed"])
    r4 = med(large["ppml sealed"]) / med(large["stock"])
    print(f"  sealed / unsealed (same)   {r3:5.2f}x   (goal <= 1.2x)")
    print(f"  sealed / stock ipykernel   {r4:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
