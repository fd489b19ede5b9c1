"""``ppml-kernel run NOTEBOOK``: execute a notebook through a sealed session (headless).

What nbclient and papermill users need, without giving the relay what a stock client
would: the kernel is attested (quote verified with a policy, owner key proven), every
cell is sent sealed and every output comes back sealed. The executed notebook is
written with outputs in the clear (default) or sealed under a key file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ppml_kernel.cli import fail
from ppml_kernel.cli.errors import CLIError

EXIT_CELL_ERROR = 1
EXIT_UNUSABLE = 2
EXIT_ATTESTATION = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="execute a notebook through a verified, sealed session (headless)",
        description="Start the notebook's PPML kernel, verify its enclave (quote, collateral, "
        "policy) and prove an owner key, then execute every code cell sealed: the Jupyter "
        "wire carries no code and no output in the clear. Exit codes: 0 all cells ran, 1 a "
        "cell failed, 2 unusable input, 3 the enclave was not accepted.",
    )
    p.add_argument("notebook", metavar="NOTEBOOK.ipynb", help="the notebook to execute")
    p.add_argument(
        "-o", "--output", metavar="FILE", help="where to write the executed notebook [in place]"
    )
    p.add_argument("--kernel", metavar="NAME", help="kernelspec [the notebook's, else ppml]")
    p.add_argument("--policy", metavar="FILE", help="policy or reference-values JSON file")
    p.add_argument(
        "--allow-simulated",
        action="store_true",
        help="accept a SIMULATED enclave (NOT confidential: teaching, demos, tests)",
    )
    p.add_argument(
        "--outputs",
        choices=("clear", "sealed"),
        default="clear",
        help="write outputs in the clear, or sealed under --seal-key [clear]",
    )
    p.add_argument(
        "--seal-key",
        metavar="FILE",
        help="32-byte key file for --outputs sealed (created, mode 0600, if missing)",
    )
    p.add_argument(
        "--seal-sources", action="store_true", help="with --outputs sealed, seal cell sources too"
    )
    p.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="NAME=ENVVAR",
        help="answer the kernel's request for secret NAME with the value of $ENVVAR "
        "(values never go on the command line); repeatable",
    )
    p.add_argument("--timeout", type=float, default=1800, help="seconds per cell [1800]")
    p.add_argument("--allow-errors", action="store_true", help="keep going after a failing cell")
    p.add_argument("--quiet", action="store_true", help="no per-cell progress on stderr")
    p.set_defaults(func=run)


def _secret_env(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        name, sep, env = pair.partition("=")
        if not sep or not name or not env:
            raise ValueError(f"--secret {pair!r}: expected NAME=ENVVAR")
        mapping[name] = env
    return mapping


def _to_output(msg: dict[str, Any]) -> Any:
    import nbformat

    kind, content = msg["msg_type"], msg["content"]
    if kind == "stream":
        return nbformat.v4.new_output("stream", name=content["name"], text=content["text"])
    if kind in ("display_data", "update_display_data"):
        return nbformat.v4.new_output(
            "display_data", data=content.get("data", {}), metadata=content.get("metadata", {})
        )
    if kind == "execute_result":
        return nbformat.v4.new_output(
            "execute_result",
            data=content.get("data", {}),
            metadata=content.get("metadata", {}),
            execution_count=content.get("execution_count"),
        )
    return nbformat.v4.new_output(
        "error",
        ename=content.get("ename", ""),
        evalue=content.get("evalue", ""),
        traceback=content.get("traceback", []),
    )


def _merge_streams(outputs: list[Any]) -> list[Any]:
    merged: list[Any] = []
    for out in outputs:
        last = merged[-1] if merged else None
        if (
            out.output_type == "stream"
            and last is not None
            and last.output_type == "stream"
            and last.name == out.name
        ):
            last.text += out.text
        else:
            merged.append(out)
    return merged


def run(args: argparse.Namespace) -> int:
    import nbformat

    path = Path(args.notebook)
    try:
        nb = nbformat.read(path, as_version=4)
        secret_env = _secret_env(args.secret)
    except (OSError, ValueError) as exc:
        return fail(f"cannot read {path}: {exc}", EXIT_UNUSABLE, command="ppml-kernel run")
    if args.outputs == "sealed" and not args.seal_key:
        return fail(
            "--outputs sealed needs --seal-key FILE", EXIT_UNUSABLE, command="ppml-kernel run"
        )
    kernel = args.kernel or nb.metadata.get("kernelspec", {}).get("name") or "ppml"

    def secret_provider(name: str, prompt: str) -> str | None:
        env = secret_env.get(name)
        return os.environ.get(env) if env else None

    policy = None
    policy_path = args.policy or os.environ.get("PPML_POLICY")
    if policy_path:
        from ppml_kernel.attestation import Policy, PolicyError

        try:
            policy = Policy.load(policy_path)
        except (OSError, PolicyError, ValueError) as exc:
            return fail(f"policy {policy_path}: {exc}", EXIT_UNUSABLE, command="ppml-kernel run")

    from jupyter_client.manager import KernelManager

    from ppml_kernel.channel.sealed_client import SealedClientError, SealedKernelClient

    km = KernelManager(kernel_name=kernel)
    try:
        km.start_kernel(cwd=str(path.resolve().parent))
    # boundary: jupyter_client and the kernelspec's provisioner (an entry point, any
    # package) raise what they like; no such kernelspec or a bad argv is one clear line
    except Exception as exc:
        raise CLIError(f"cannot start kernel {kernel!r}: {exc}", EXIT_UNUSABLE,
                       command="ppml-kernel run") from None
    kc = km.client()
    kc.start_channels()
    failed = False
    try:
        kc.wait_for_ready(timeout=120)
        sealed = SealedKernelClient(
            kc,
            policy=policy,
            allow_simulated=args.allow_simulated,
            secret_provider=secret_provider,
        )
        try:
            ready = sealed.attest()
        except SealedClientError as exc:
            return fail(str(exc), EXIT_ATTESTATION, command="ppml-kernel run")
        tee = sealed.evidence.get("tee", {})
        if not args.quiet:
            label = "SIMULATED (not confidential)" if tee.get("simulated") else tee.get("kind", "?")
            mode = "sealed mode" if ready.get("sealed_mode", {}).get("on") else "sealed session"
            print(f"ppml-kernel run: {path.name} on {label}, {mode}", file=sys.stderr)
        cells = [c for c in nb.cells if c.cell_type == "code"]
        for index, cell in enumerate(cells, 1):
            start = time.monotonic()
            result = sealed.execute(cell.source, timeout=args.timeout, allow_stdin=False)
            cell.outputs = _merge_streams([_to_output(m) for m in result.outputs])
            cell.execution_count = result.reply["content"].get("execution_count")
            status = result.reply["content"].get("status")
            if not args.quiet:
                print(
                    f"  [{index}/{len(cells)}] {status} in {time.monotonic() - start:.1f} s",
                    file=sys.stderr,
                )
            if status == "error":
                failed = True
                content = result.reply["content"]
                print(
                    f"ppml-kernel run: cell {index} failed: {content.get('ename')}: "
                    f"{content.get('evalue')}",
                    file=sys.stderr,
                )
                if not args.allow_errors:
                    break
    except SealedClientError as exc:
        return fail(str(exc), EXIT_CELL_ERROR, command="ppml-kernel run")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    out_path = Path(args.output) if args.output else path
    if args.outputs == "sealed":
        from ppml_kernel.channel.atrest import load_or_create_key, seal_notebook

        key = load_or_create_key(Path(args.seal_key))
        nb = nbformat.from_dict(seal_notebook(nb, key, sources=args.seal_sources))
    nbformat.write(nb, out_path)
    return EXIT_CELL_ERROR if failed else 0
