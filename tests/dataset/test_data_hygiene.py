"""Key and plaintext hygiene (issue 11, item 13).

* A provider that returns a data key of the wrong size is named as the fault; the error
  no longer says the file's header was modified.
* ``write_pandas``'s temp file is named by pid and a random suffix, so another writer's
  temp file (or one planted ahead) is neither reused nor deleted.
* ``EncryptedFile.close`` and a finished ``iter_plaintext`` wipe their plaintext buffer.
* ``%ppml secret`` never binds the plaintext to a local of the magic.
"""

from __future__ import annotations

import io
import os
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from ppml_kernel.data import format as F
from ppml_kernel.data.errors import BadDataKeyError, HeaderTamperedError
from ppml_kernel.keys.files import generate_kek
from ppml_kernel.keys.store import KeyStore, KeyStoreProvider

PLAIN = b"0123456789abcdef-plaintext-that-must-not-linger;" * 200


@pytest.fixture
def provider() -> KeyStoreProvider:
    store = KeyStore()
    store.put("k1", generate_kek())
    return KeyStoreProvider(store)


def encrypted(tmp_path: Path, provider, data: bytes = PLAIN) -> Path:
    path = tmp_path / "f.ppml"
    with open(path, "wb") as out:
        F.encrypt_stream(io.BytesIO(data), out, provider, "k1", chunk_size=4096)
    return path


class ShortKeys:
    """A faulty provider: wraps correctly, but unwraps to a 16-byte key."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def wrap(self, key_id, data_key, context):
        return self.inner.wrap(key_id, data_key, context)

    def unwrap(self, key_id, wrapped, context):
        return self.inner.unwrap(key_id, wrapped, context)[:16]

    def describe(self) -> str:
        return "a faulty test provider"


def test_a_wrong_size_data_key_names_the_provider_not_the_header(tmp_path, provider):
    path = encrypted(tmp_path, provider)
    with pytest.raises(BadDataKeyError) as err:
        F.EncryptedFile(path, ShortKeys(provider))
    message = str(err.value)
    assert not isinstance(err.value, HeaderTamperedError)
    assert "header was modified" not in message
    assert "a faulty test provider" in message and "16-byte data key" in message
    assert "'k1'" in message and str(path) in message and "32 bytes" in message
    with open(path, "rb") as src, pytest.raises(BadDataKeyError):
        F.decrypt_stream(src, io.BytesIO(), ShortKeys(provider), source=str(path))
    with F.EncryptedFile(path, provider) as ef:  # the file itself is fine
        assert bytes(ef.chunk(0)) == PLAIN[:4096]


def test_write_pandas_temp_file_has_pid_and_leaves_others_alone(tmp_path, provider, monkeypatch):
    from ppml_kernel.data import pandas_io, writers

    target = tmp_path / "out.csv.ppml"
    planted = tmp_path / ".out.csv.ppml.tmp"  # the old fixed name: another writer's, or a trap
    planted.write_bytes(b"someone else's temp file")
    used: list[str] = []
    real = writers.write_batches

    def spy(batches, path, *args, **kwargs):
        used.append(os.fspath(path))
        return real(batches, path, *args, **kwargs)

    monkeypatch.setattr(writers, "write_batches", spy)
    pandas_io.write_pandas(pd.DataFrame({"a": [1, 2]}), target, "k1", provider=provider)
    assert target.exists()
    assert planted.read_bytes() == b"someone else's temp file"
    (name,) = [os.path.basename(p) for p in used]
    assert f".{os.getpid()}." in name and name.endswith(".tmp") and name != planted.name
    assert not os.path.exists(used[0])  # renamed into place


def test_encrypted_file_close_wipes_its_plaintext_buffer(tmp_path, provider):
    path = encrypted(tmp_path, provider)
    ef = F.EncryptedFile(path, provider)
    view = ef.chunk(1)
    assert bytes(view) == PLAIN[4096:8192]
    buffer = ef._plain
    ef.close()
    assert buffer == bytes(len(buffer))
    assert bytes(view) == bytes(len(view))


def test_iter_plaintext_wipes_its_buffer_when_done_or_abandoned(tmp_path, provider):
    path = encrypted(tmp_path, provider)
    views = []
    with open(path, "rb") as f:
        for view in F.iter_plaintext(f, provider, str(path)):
            views.append(view)
    assert all(bytes(v) == bytes(len(v)) for v in views)
    with open(path, "rb") as f:
        it = F.iter_plaintext(f, provider, str(path))
        first = next(it)
        assert bytes(first) == PLAIN[:4096]
        it.close()
    assert bytes(first) == bytes(len(first))


def test_secret_magic_keeps_no_plaintext_in_its_frames(monkeypatch):
    from ppml_kernel.magics import secret as magic
    from ppml_kernel.secrets import STORE

    plaintext = "correct horse battery staple 7f3a"

    class Manager:
        def request_secret_from(self, name, prompt, timeout):
            return plaintext[:], {"tee": "sgx", "status": "UpToDate"}

    monkeypatch.setattr(magic, "manager_of", lambda kernel: Manager())
    args = types.SimpleNamespace(name="db_password", prompt=None, timeout=5.0)
    ctx = types.SimpleNamespace(kernel=object())

    def leaked(tb) -> list[str]:
        found = []
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code.co_filename == magic.__file__:
                for key, value in frame.f_locals.items():
                    if plaintext in repr(value):
                        found.append(f"{frame.f_code.co_name}: {key}")
            tb = tb.tb_next
        return found

    def fail_after_storing(kernel, verdict):
        raise RuntimeError("display failed")

    monkeypatch.setattr(magic, "_describe", fail_after_storing)
    try:
        with pytest.raises(RuntimeError) as err:
            magic.run_secret(ctx, args)
        assert leaked(err.value.__traceback__) == []
        assert STORE.get("db_password") == plaintext

        def store_fails(name, value, source="browser"):
            raise MemoryError("store failed")

        monkeypatch.setattr(STORE, "put", store_fails)
        with pytest.raises(MemoryError) as err:
            magic.run_secret(ctx, args)
        assert leaked(err.value.__traceback__) == []
    finally:
        monkeypatch.undo()
        STORE.delete("db_password")
    assert "db_password" not in STORE
    assert sys.exc_info() == (None, None, None)
