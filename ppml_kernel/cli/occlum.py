"""``ppml-kernel occlum ...``: generate Occlum.json and reference values.

``occlum config`` turns typed options (memory, cores, trusted environment, product id,
version) into Occlum.json and, optionally, the Occlum-safe spark-defaults.conf;
``--explain`` prints the sizing arithmetic. ``occlum reference-values`` writes the file
a verifier pins, from the MRENCLAVE/MRSIGNER that ``occlum print`` reports.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from ppml_kernel.cli import fail
from ppml_kernel.occlum import reference, spark_conf
from ppml_kernel.occlum.config import (
    CONNECTION_MOUNT,
    CONNECTION_SOURCE,
    JAVA_HOME,
    PYTHON_HOME,
    PYTHON_VERSION,
    HostMount,
    OcclumConfig,
    OcclumConfigError,
    default_env,
    write_occlum_json,
)
from ppml_kernel.occlum.sizes import format_size, parse_size
from ppml_kernel.occlum.sizing import plan


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``occlum config`` and ``occlum reference-values``."""
    parser = subparsers.add_parser(
        "occlum",
        help="Occlum enclave image: Occlum.json, reference values",
        description="Generate the files an Occlum enclave image of the kernel needs.",
    )
    commands = parser.add_subparsers(dest="occlum_command", metavar="COMMAND")
    commands.required = True
    _add_config(commands)
    _add_reference_values(commands)


def _add_config(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "config",
        help="write Occlum.json (and spark-defaults.conf) for the kernel enclave",
        description=(
            "Write Occlum.json with sizes derived from the Spark driver's memory and cores "
            "(override any of them), a measured environment, no untrusted environment "
            "unless asked, one hostfs directory for connection files, and debuggable "
            "false."
        ),
    )
    p.add_argument(
        "-o",
        "--output",
        default="Occlum.json",
        help="where to write (default: "
        "./Occlum.json; a different existing file is kept as Occlum.json.bak)",
    )
    p.add_argument(
        "--print",
        dest="to_stdout",
        action="store_true",
        help="print Occlum.json instead of writing it",
    )
    p.add_argument(
        "--explain", action="store_true", help="print the memory/thread budget to stderr"
    )
    size = p.add_argument_group("sizing")
    size.add_argument(
        "--driver-memory",
        type=_size,
        default=parse_size("2GB"),
        help="Spark driver heap, e.g. 2GB (default 2GB)",
    )
    size.add_argument("--cores", type=_count, default=2, help="cores for Spark (default 2)")
    size.add_argument(
        "--python-workers",
        type=_count,
        default=None,
        help="Python UDF workers at once (default: --cores)",
    )
    size.add_argument(
        "--edmm",
        action="store_true",
        help="SGX2 + Linux 6.0: commit memory on demand (faster start)",
    )
    size.add_argument("--user-space-size", type=_size, help="override the user space size")
    size.add_argument("--kernel-heap-size", type=_size, help="override the LibOS heap size")
    size.add_argument("--max-threads", type=_count, help="override max_num_of_threads")
    ident = p.add_argument_group("identity (measured)")
    ident.add_argument("--product-id", type=_count, default=0, help="ISVPRODID (0..65535)")
    ident.add_argument(
        "--version",
        type=_count,
        default=0,
        help="ISVSVN (0..65535); raise it to retire older builds",
    )
    ident.add_argument(
        "--debuggable",
        action="store_true",
        help="DEBUG enclave: NOT confidential, rejected by verifiers",
    )
    env = p.add_argument_group("environment and mounts")
    env.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="add a measured variable to env.default (repeatable)",
    )
    env.add_argument(
        "--untrusted-env",
        action="append",
        default=[],
        metavar="NAME",
        help="let the host set NAME (repeatable; keep this list minimal)",
    )
    env.add_argument(
        "--hostfs",
        action="append",
        default=[],
        metavar="TARGET=SOURCE",
        help="extra host directory, for ciphertext only (repeatable)",
    )
    env.add_argument(
        "--connection-mount",
        default=CONNECTION_MOUNT,
        help=f"enclave path of the connection-file directory ({CONNECTION_MOUNT})",
    )
    env.add_argument(
        "--connection-source",
        default=CONNECTION_SOURCE,
        help=f"its host path, relative to the instance ({CONNECTION_SOURCE})",
    )
    env.add_argument("--python-home", default=PYTHON_HOME)
    env.add_argument("--python-version", default=PYTHON_VERSION)
    env.add_argument("--java-home", default=JAVA_HOME)
    p.add_argument(
        "--spark-defaults",
        metavar="PATH",
        help="also write the Occlum-safe spark-defaults.conf here",
    )
    p.set_defaults(func=run_config)


def _add_reference_values(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "reference-values",
        help="write the reference values a verifier pins for this build",
        description=(
            "Write a ppml-reference-values/1 file from MRENCLAVE and MRSIGNER "
            "(`occlum print mrenclave|mrsigner`); product id and minimum ISVSVN come from "
            "--occlum-json or the options."
        ),
    )
    p.add_argument("--mrenclave", action="append", required=True, help="hex (repeatable)")
    p.add_argument("--mrsigner", action="append", required=True, help="hex (repeatable)")
    p.add_argument("--occlum-json", help="read product_id and version_number from here")
    p.add_argument("--isv-prod-id", type=_count, help="ISVPRODID (default: from Occlum.json)")
    p.add_argument(
        "--min-isv-svn",
        type=_count,
        help="lowest ISVSVN accepted (default: the build's version_number)",
    )
    p.add_argument(
        "--allow-tcb-status",
        action="append",
        metavar="STATUS",
        help="TCB status to accept (repeatable; default: UpToDate, SWHardeningNeeded)",
    )
    p.add_argument("-o", "--output", default="reference-values.json")
    p.add_argument(
        "--append",
        action="store_true",
        help="keep the measurements already in --output (rolling upgrade)",
    )
    p.set_defaults(func=run_reference_values)


def _fail(message: str) -> int:
    return fail(message, 2, command="ppml-kernel occlum")


def build_config(args: argparse.Namespace) -> OcclumConfig:
    """The OcclumConfig the ``config`` options describe."""
    resources = plan(args.driver_memory, args.cores, args.python_workers, edmm=args.edmm)
    overrides: dict[str, int] = {}
    if args.user_space_size is not None:
        key = "user_space_max_size" if args.edmm else "user_space_size"
        overrides[key] = args.user_space_size
    if args.kernel_heap_size is not None:
        key = "kernel_space_heap_max_size" if args.edmm else "kernel_space_heap_size"
        overrides[key] = args.kernel_heap_size
    if args.max_threads is not None:
        overrides["max_num_of_threads"] = args.max_threads
    if overrides:
        resources = replace(resources, **overrides)
    env = default_env(
        python_home=args.python_home,
        python_version=args.python_version,
        java_home=args.java_home,
        connection_mount=args.connection_mount,
    )
    extra_names = {e.partition("=")[0] for e in args.env}
    env = tuple(e for e in env if e.partition("=")[0] not in extra_names) + tuple(args.env)
    return OcclumConfig(
        resources=resources,
        product_id=args.product_id,
        version_number=args.version,
        debuggable=args.debuggable,
        env_default=env,
        env_untrusted=tuple(args.untrusted_env),
        connection_mount=args.connection_mount,
        connection_source=args.connection_source,
        extra_hostfs=tuple(HostMount.parse(m) for m in args.hostfs),
        enable_edmm=args.edmm,
    )


def run_config(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
        text = config.render()
    except OcclumConfigError as exc:
        return _fail(str(exc))
    if args.debuggable:
        print(
            "WARNING: debuggable enclave: its memory can be read by a debugger, it is "
            "NOT confidential, and verifiers reject its quotes.",
            file=sys.stderr,
        )
    if args.explain:
        print("Enclave budget:\n" + config.resources.explain(), file=sys.stderr)
    if args.to_stdout:
        sys.stdout.write(text)
    else:
        try:
            backup = write_occlum_json(config, args.output)
        except OSError as exc:
            return _fail(f"cannot write {args.output}: {exc.strerror or exc}")
        size = format_size(config.resources.enclave_user_memory)
        print(
            f"wrote {args.output} (user space {size}, "
            f"{config.resources.max_num_of_threads} threads)",
            file=sys.stderr,
        )
        if backup:
            print(f"kept the previous file as {backup}", file=sys.stderr)
    if args.spark_defaults:
        python = f"{args.python_home}/bin/python3"
        conf = spark_conf.spark_defaults(
            driver_memory=args.driver_memory, cores=args.cores, python=python
        )
        try:
            Path(args.spark_defaults).write_text(spark_conf.render(conf), encoding="utf-8")
        except OSError as exc:
            return _fail(f"cannot write {args.spark_defaults}: {exc.strerror or exc}")
    return 0


def run_reference_values(args: argparse.Namespace) -> int:
    prod_id, svn = args.isv_prod_id, args.min_isv_svn
    if args.occlum_json:
        try:
            meta = json.loads(Path(args.occlum_json).read_text(encoding="utf-8"))["metadata"]
            prod_id = meta["product_id"] if prod_id is None else prod_id
            svn = meta["version_number"] if svn is None else svn
            if meta.get("debuggable"):
                return _fail(
                    f"{args.occlum_json} builds a debuggable enclave; verifiers "
                    "reject it, so there are no reference values to write"
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return _fail(f"cannot read product id and version from {args.occlum_json}: {exc}")
    if prod_id is None or svn is None:
        return _fail("give --occlum-json, or both --isv-prod-id and --min-isv-svn")
    try:
        doc = reference.reference_values(
            mrenclave=args.mrenclave,
            mrsigner=args.mrsigner,
            isv_prod_id=prod_id,
            min_isv_svn=svn,
            allowed_tcb_statuses=args.allow_tcb_status or reference.DEFAULT_TCB_STATUSES,
        )
        if args.append and Path(args.output).exists():
            doc = reference.merge(reference.load(args.output), doc)
        reference.write(doc, args.output)
    except reference.ReferenceValuesError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write {args.output}: {exc.strerror or exc}")
    print(
        f"wrote {args.output}: MRENCLAVE {', '.join(doc['mrenclave'])}",  # type: ignore[arg-type]
        file=sys.stderr,
    )
    return 0
