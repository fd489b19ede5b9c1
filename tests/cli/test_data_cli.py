"""The data owner's CLI: keygen, encrypt, decrypt, inspect, rewrap (never a key on screen)."""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from ppml_kernel.cli import data as cli
from ppml_kernel.data import format as F
from ppml_kernel.keys.files import read_key_file


def run(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="ppml-kernel")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = args.func(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def key(tmp_path) -> Path:
    code, _, _ = run("keygen", "sales", "-o", str(tmp_path / "sales.key"))
    assert code == 0
    return tmp_path / "sales.key"


def test_keygen_writes_a_private_key_file_and_never_prints_the_key(tmp_path, key):
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    key_id, kek = read_key_file(key)
    assert key_id == "sales" and len(kek) == 32
    code, out, err = run("keygen", "sales", "-o", str(key))
    assert code == 1 and "already exists" in err
    code, out, err = run("keygen", "other", "-o", str(tmp_path / "other.key"))
    _, kek2 = read_key_file(tmp_path / "other.key")
    assert kek2.hex() not in out + err and "key check" in out


def test_loose_key_file_permissions_are_refused(tmp_path, key):
    (tmp_path / "in.csv").write_text("a,b\n1,2\n")
    os.chmod(key, 0o644)
    code, _, err = run(
        "encrypt", str(tmp_path / "in.csv"), "-o", str(tmp_path / "o"), "--key-file", str(key)
    )
    assert code == 1 and "chmod 600" in err and err.count("\n") == 1


def test_encrypt_decrypt_directories_round_trip(tmp_path, key):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    files = {
        "a.csv": b"x,y\n1,2\n",
        "sub/b.json": b'{"k": 1}\n',
        "empty.txt": b"",
        "sub/big.bin": os.urandom(3 * F.DEFAULT_CHUNK_SIZE + 7),
    }
    for name, body in files.items():
        (src / name).write_bytes(body)
    (src / "_SUCCESS").write_bytes(b"")
    code, _, err = run("encrypt", str(src), "-o", str(tmp_path / "enc"), "--key-file", str(key))
    assert code == 0, err
    enc = tmp_path / "enc"
    assert sorted(str(p.relative_to(enc)) for p in enc.rglob("*") if p.is_file()) == sorted(
        n + ".ppml" for n in files
    )
    for name in files:
        blob = (enc / (name + ".ppml")).read_bytes()
        assert blob.startswith(F.MAGIC)
    code, _, err = run("decrypt", str(enc), "-o", str(tmp_path / "dec"), "--key-file", str(key))
    assert code == 0, err
    for name, body in files.items():
        assert (tmp_path / "dec" / name).read_bytes() == body
    # outputs exist: refused without --force, nothing half-written left behind
    code, _, err = run("encrypt", str(src), "-o", str(enc), "--key-file", str(key))
    assert code == 1 and "--force" in err
    assert not list(enc.rglob(".*tmp"))


def test_single_file_output_and_already_encrypted(tmp_path, key):
    (tmp_path / "in.csv").write_text("a\n1\n")
    out = tmp_path / "one.csv.ppml"
    assert run("encrypt", str(tmp_path / "in.csv"), "-o", str(out), "--key-file", str(key))[0] == 0
    code, _, err = run("encrypt", str(out), "-o", str(tmp_path / "again"), "--key-file", str(key))
    assert code == 1 and "already a ppml-aead file" in err


def test_decrypt_of_a_tampered_file_leaves_no_plaintext(tmp_path, key):
    (tmp_path / "in.bin").write_bytes(os.urandom(3 * 4096))
    enc = tmp_path / "in.bin.ppml"
    run(
        "encrypt",
        str(tmp_path / "in.bin"),
        "-o",
        str(enc),
        "--key-file",
        str(key),
        "--chunk-size",
        "4096",
    )
    bad = bytearray(enc.read_bytes())
    bad[-5] ^= 1
    enc.write_bytes(bytes(bad))
    code, _, err = run("decrypt", str(enc), "-o", str(tmp_path / "out.bin"), "--key-file", str(key))
    assert code == 1 and "chunk 2" in err and str(enc) in err
    assert not (tmp_path / "out.bin").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_wrong_key_is_one_clear_line(tmp_path, key):
    (tmp_path / "in.csv").write_text("a\n")
    run("encrypt", str(tmp_path / "in.csv"), "-o", str(tmp_path / "e.ppml"), "--key-file", str(key))
    os.unlink(key)
    run("keygen", "sales", "-o", str(key))  # same key id, new key
    code, _, err = run(
        "decrypt", str(tmp_path / "e.ppml"), "-o", str(tmp_path / "d"), "--key-file", str(key)
    )
    assert code == 1 and err.count("\n") == 1
    assert "wrong key" in err and "'sales'" in err and "e.ppml" in err
    assert "Traceback" not in err


def test_inspect_shows_header_fields_but_no_key_material(tmp_path, key):
    (tmp_path / "in.csv").write_text("a\n" * 1000)
    enc = tmp_path / "in.csv.ppml"
    run("encrypt", str(tmp_path / "in.csv"), "-o", str(enc), "--key-file", str(key))
    code, out, _ = run("inspect", str(enc))
    assert code == 0
    for field in ("key_id", "sales", "AES-256-GCM", "chunk_size", "plaintext_size", "2000"):
        assert field in out
    header = F.read_header(enc)
    _, kek = read_key_file(key)
    assert header.wrapped.ciphertext.hex() not in out and kek.hex() not in out
    code, out, _ = run("inspect", "--json", str(enc))
    assert json.loads(out)[0]["key_id"] == "sales"


def test_inspect_accepts_a_directory_like_encrypt(tmp_path, key):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.csv").write_text("x\n1\n")
    (src / "sub" / "b.csv").write_text("x\n2\n")
    run("encrypt", str(src), "-o", str(tmp_path / "enc"), "--key-file", str(key))
    code, out, err = run("inspect", str(tmp_path / "enc"))
    assert code == 0, err
    assert "a.csv.ppml" in out and "b.csv.ppml" in out and out.count("sales") == 2
    code, out, _ = run("inspect", "--json", str(tmp_path / "enc"))
    assert sorted(Path(i["file"]).name for i in json.loads(out)) == ["a.csv.ppml", "b.csv.ppml"]


def test_inspect_says_what_a_foreign_file_looks_like(tmp_path):
    (tmp_path / "plain.csv").write_text("id,name\n1,a\n")
    (tmp_path / "data.gz").write_bytes(b"\x1f\x8b\x08\x00rest")
    code, _, err = run("inspect", str(tmp_path / "plain.csv"), str(tmp_path / "data.gz"))
    assert code == 1
    assert "plaintext CSV text" in err and "gzip" in err


def test_rewrap_rotates_the_key_in_place(tmp_path, key):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.csv").write_bytes(os.urandom(10_000))
    run("encrypt", str(src), "-o", str(tmp_path / "enc"), "--key-file", str(key))
    before = {p.name: p.read_bytes() for p in (tmp_path / "enc").iterdir()}
    run("keygen", "sales-2025", "-o", str(tmp_path / "new.key"))
    code, _, err = run(
        "rewrap",
        str(tmp_path / "enc"),
        "--key-file",
        str(key),
        "--new-key-file",
        str(tmp_path / "new.key"),
    )
    assert code == 0, err
    for p in (tmp_path / "enc").iterdir():
        assert p.read_bytes()[F.HEADER_SIZE :] == before[p.name][F.HEADER_SIZE :]
        assert F.read_header(p).key_id == "sales-2025"
    code, _, err = run(
        "decrypt",
        str(tmp_path / "enc"),
        "-o",
        str(tmp_path / "dec"),
        "--key-file",
        str(tmp_path / "new.key"),
    )
    assert code == 0, err
    for i in range(3):
        assert (tmp_path / "dec" / f"{i}.csv").read_bytes() == (src / f"{i}.csv").read_bytes()
    code, _, err = run(
        "decrypt", str(tmp_path / "enc"), "-o", str(tmp_path / "dec2"), "--key-file", str(key)
    )
    assert code == 1 and "sales-2025" in err


def test_progress_bar_goes_to_stderr(tmp_path, key):
    (tmp_path / "in.bin").write_bytes(os.urandom(200_000))
    code, out, err = run(
        "encrypt",
        str(tmp_path / "in.bin"),
        "-o",
        str(tmp_path / "o.ppml"),
        "--key-file",
        str(key),
        "--progress",
    )
    assert code == 0 and "encrypt" in err and "100%" in err and "%" not in out


def test_no_option_takes_a_key_on_the_command_line():
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    text = json.dumps(
        [
            a.option_strings
            for sp in parser._subparsers._group_actions
            for p in sp.choices.values()
            for a in p._actions
        ]
    )
    assert '"--key"' not in text and "--secret" not in text and "--password" not in text


def test_readme_data_owner_commands_run_as_typed(tmp_path):
    """The README's data-owner block, line by line, in a directory with a `.venv/bin`."""
    import re
    import subprocess
    import sys

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = re.search(r"```bash\n(mkdir -p data.*?)```", readme, re.S)
    assert block, "the README's data-owner example moved"
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "ppml-kernel"  # stands for the console script pip installs
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ppml_kernel.cli "$@"\n')
    wrapper.chmod(0o755)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.group(1)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "enc" / "part-0.csv.ppml").is_file()
    assert "sales-2024" in done.stdout  # inspect enc/ names the key id
