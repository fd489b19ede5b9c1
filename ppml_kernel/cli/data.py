"""The data owner's commands (run outside enclaves): keygen, encrypt, decrypt, inspect, rewrap.

Keys are only ever named by a key *file* path (mode 0600); a key never appears on a
command line, in output or in an error. Outputs are written to a hidden temporary file
next to the target and renamed into place only when complete, so a failed or
interrupted run leaves nothing half-written (and, for decrypt, no unauthenticated
plaintext).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from ppml_kernel.cli import fail
from ppml_kernel.cli.output import Progress, print_table
from ppml_kernel.data.errors import DatasetError
from ppml_kernel.data.files import walk_files
from ppml_kernel.data.format import (
    DEFAULT_CHUNK_SIZE,
    FILE_SUFFIX,
    HEADER_SIZE,
    MAGIC,
    Header,
    Layout,
    decrypt_stream,
    encrypt_stream,
    rewrap_file,
)
from ppml_kernel.data.sniff import PME_MAGIC
from ppml_kernel.keys.files import KeyFileProvider, generate_kek, write_key_file
from ppml_kernel.keys.wrap import key_check_value

# --------------------------------------------------------------------------- helpers


def _inputs(paths: list[str]) -> Iterator[tuple[Path, Path]]:
    """(input file, path relative to the output root) for files and directory trees."""
    for p in map(Path, paths):
        for full, rel in walk_files(p):
            yield Path(full), Path(rel)


def _atomic_write(target: Path, force: bool, fill: Callable[[BinaryIO], None]) -> None:
    """Write through ``fill(file)`` into a hidden temp file, then rename to ``target``."""
    if target.exists() and not force:
        raise DatasetError(f"{target} exists (use --force to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _plan_outputs(inputs: list[tuple[Path, Path]], out: str, suffix_fn: Callable[[Path], Path]
                  ) -> list[tuple[Path, Path]]:
    """Map inputs to outputs: one file -> OUT may be a file; otherwise OUT is a directory."""
    out_path = Path(out)
    single_file = len(inputs) == 1 and not out.endswith(os.sep) and not out_path.is_dir()
    if single_file:
        return [(inputs[0][0], out_path)]
    return [(src, out_path / suffix_fn(rel)) for src, rel in inputs]


def _head(path: Path) -> tuple[bytes, int]:
    with open(path, "rb") as f:
        return f.read(HEADER_SIZE), os.fstat(f.fileno()).st_size


# --------------------------------------------------------------------------- commands


def cmd_keygen(args: argparse.Namespace) -> int:
    kek = generate_kek()
    path = write_key_file(args.output, args.key_id, kek, overwrite=args.force)
    print(f"wrote key {args.key_id!r} to {path} (mode 0600, key check "
          f"{key_check_value(kek).hex()})")
    print("Keep this file private; it is the only way to read data encrypted with it.")
    return 0


def _sole_key_id(provider: KeyFileProvider) -> str | None:
    """The key id when the key files hold exactly one key, else None (the user must choose)."""
    ids = provider.key_ids()
    return ids[0] if len(ids) == 1 else None


Transform = Callable[[BinaryIO, BinaryIO, Path, Callable[[int], None]], None]


def _write_plan(plan: list[tuple[Path, Path]], label: str, args: argparse.Namespace,
                transform: Transform) -> int:
    """Run ``transform(src file, out file, src, progress)`` for each (src, dst), atomically.

    Returns the total input size. Each output appears only once it is complete.
    """
    total = sum(src.stat().st_size for src, _ in plan)
    bar = Progress(label, total, enabled=True if args.progress else None)
    try:
        for src, dst in plan:
            def fill(out: BinaryIO, src: Path = src) -> None:
                with open(src, "rb") as f:
                    transform(f, out, src, bar.update)
            _atomic_write(dst, args.force, fill)
    finally:
        bar.close()
    return total


def cmd_encrypt(args: argparse.Namespace) -> int:
    provider = KeyFileProvider(args.key_file)
    key_id = args.key_id or _sole_key_id(provider)
    if not key_id:
        return fail("several keys loaded: choose one with --key-id")
    if key_id not in provider.key_ids():
        return fail(f"no key with key id {key_id!r} in the key file(s)")
    inputs = list(_inputs(args.inputs))
    plan = _plan_outputs(inputs, args.output, lambda rel: rel.with_name(rel.name + FILE_SUFFIX))
    for src, _ in plan:
        head, _size = _head(src)
        if head.startswith(MAGIC):
            raise DatasetError(f"{src} is already a ppml-aead file")

    def encrypt(f: BinaryIO, out: BinaryIO, src: Path, progress: Callable[[int], None]) -> None:
        encrypt_stream(f, out, provider, key_id, args.chunk_size, source=str(src),
                       progress=progress)

    total = _write_plan(plan, "encrypt", args, encrypt)
    print(f"encrypted {len(plan)} file(s), {total / 1e6:,.1f} MB, for key id {key_id!r} -> "
          f"{args.output}", file=sys.stderr)
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    provider = KeyFileProvider(args.key_file)
    inputs = list(_inputs(args.inputs))
    plan = _plan_outputs(
        inputs, args.output,
        lambda rel: rel.with_name(rel.name.removesuffix(FILE_SUFFIX)) if rel.name.endswith(
            FILE_SUFFIX) else rel.with_name(rel.name + ".plain"))

    def decrypt(f: BinaryIO, out: BinaryIO, src: Path, progress: Callable[[int], None]) -> None:
        decrypt_stream(f, out, provider, source=str(src), progress=progress)

    _write_plan(plan, "decrypt", args, decrypt)
    print(f"decrypted {len(plan)} file(s) -> {args.output}", file=sys.stderr)
    return 0


def describe_file(path: Path) -> dict[str, object]:
    """Header facts for ``inspect`` (never key material; the wrapped key is not shown)."""
    head, size = _head(path)
    if head.startswith(PME_MAGIC):
        return {"file": str(path), "format": "Parquet Modular Encryption (encrypted footer)",
                "size": size, "note": "key ids are inside the encrypted footer"}
    header = Header.parse(head, str(path), size)  # names what a foreign file looks like
    layout = Layout(header.chunk_size, size)
    info: dict[str, object] = {"file": str(path), **header.describe(), "size": size}
    if size >= HEADER_SIZE + 16:
        info["chunks"] = layout.chunk_count
        info["plaintext_size"] = layout.plaintext_size
    return info


def cmd_inspect(args: argparse.Namespace) -> int:
    status = 0
    results = []
    for path in args.files:
        try:  # a directory: every data file in it, as encrypt and decrypt take them
            files = [full for full, _ in _inputs([path])] if Path(path).is_dir() else [path]
        except (DatasetError, OSError) as exc:
            status = 1
            print(f"ppml-kernel: {_message(exc)}", file=sys.stderr)
            continue
        for f in files:
            try:
                results.append(describe_file(Path(f)))
            except (DatasetError, OSError) as exc:
                status = 1
                print(f"ppml-kernel: {_message(exc)}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for info in results:
            print_table([(k, v) for k, v in info.items() if k != "file"],
                        title=str(info["file"]))
    return status


def cmd_rewrap(args: argparse.Namespace) -> int:
    old = KeyFileProvider(args.key_file)
    new = KeyFileProvider(args.new_key_file)
    new_id = args.new_key_id or _sole_key_id(new)
    if not new_id:
        return fail("several new keys loaded: choose one with --new-key-id")
    count = 0
    for src, _ in _inputs(args.inputs):
        head, _size = _head(src)
        if head.startswith(PME_MAGIC):
            raise DatasetError(f"{src}: Parquet Modular Encryption files keep their keys in the "
                               "encrypted footer; re-encrypt them (rewrap covers ppml-aead files)")
        rewrap_file(src, old, new, new_id)
        count += 1
    print(f"rewrapped {count} file(s) to key id {new_id!r} (data chunks unchanged)",
          file=sys.stderr)
    return 0


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """User-caused errors: one line on stderr and exit code 1, never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (DatasetError, OSError, ValueError) as exc:
            return fail(_message(exc))

    run.__doc__ = fn.__doc__
    return run


def _add_inputs(p: argparse.ArgumentParser, metavar: str = "IN") -> None:
    p.add_argument("inputs", nargs="+", metavar=metavar, help="files or directories")


def _add_key_files(p: argparse.ArgumentParser, metavar: str = "K",
                   help: str = "key file (repeatable)") -> None:
    p.add_argument("--key-file", action="append", required=True, metavar=metavar, help=help)


def _add_transform_io(p: argparse.ArgumentParser) -> None:
    """IN..., -o OUT and --key-file: what encrypt and decrypt both take first."""
    _add_inputs(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file (one input file) or directory")
    _add_key_files(p)


def _add_write_flags(p: argparse.ArgumentParser) -> None:
    """--force and --progress: how encrypt and decrypt write their outputs."""
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument("--progress", action="store_true", help="show progress even for small inputs")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add keygen, encrypt, decrypt, inspect and rewrap to ``ppml-kernel``."""
    p = subparsers.add_parser(
        "keygen", help="create a dataset key file (mode 0600)",
        description="Create a new random 256-bit dataset key in a key file (JSON, mode 0600).")
    p.add_argument("key_id", metavar="KEY_ID", help="name of the key (letters, digits, ._:@/+-)")
    p.add_argument("-o", "--output", required=True, help="key file to create")
    p.add_argument("--force", action="store_true", help="replace an existing key file")
    p.set_defaults(func=_guard(cmd_keygen))

    p = subparsers.add_parser(
        "encrypt", help="encrypt files or directories to ppml-aead/1",
        description="Encrypt files (directories recursively) with a fresh data key per file, "
        "wrapped by the key in --key-file.")
    _add_transform_io(p)
    p.add_argument("--key-id", help="which key to use when the key files hold several")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                   help=f"plaintext bytes per chunk (default {DEFAULT_CHUNK_SIZE})")
    _add_write_flags(p)
    p.set_defaults(func=_guard(cmd_encrypt))

    p = subparsers.add_parser(
        "decrypt", help="decrypt ppml-aead/1 files (data owner only)",
        description="Decrypt ppml-aead files; an output appears only after every chunk "
        "authenticated.")
    _add_transform_io(p)
    _add_write_flags(p)
    p.set_defaults(func=_guard(cmd_decrypt))

    p = subparsers.add_parser(
        "inspect", help="show the header of encrypted files (no key needed)",
        description="Show header fields: key id, key check value, chunk size, sizes. Never "
        "key material.")
    p.add_argument("files", nargs="+", metavar="PATH",
                   help="encrypted files or directories (every data file in them)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_guard(cmd_inspect))

    p = subparsers.add_parser(
        "rewrap", help="re-seal files' data keys under a new key (no re-encryption)",
        description="Rotate the key of ppml-aead files in place: only the key slot in each "
        "header changes; data chunks are not rewritten.")
    _add_inputs(p, metavar="PATH")
    _add_key_files(p, metavar="OLD", help="key file with the current key (repeatable)")
    p.add_argument("--new-key-file", action="append", required=True, metavar="NEW",
                   help="key file with the new key")
    p.add_argument("--new-key-id", help="which new key when the new key files hold several")
    p.set_defaults(func=_guard(cmd_rewrap))


def main(argv: list[str] | None = None) -> int:
    """``python -m ppml_kernel.cli.data ...``: the same commands without the full CLI."""
    parser = argparse.ArgumentParser(prog="ppml-kernel", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(title="commands", metavar="COMMAND"))
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
