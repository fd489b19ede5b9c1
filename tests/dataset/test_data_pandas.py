"""Small encrypted datasets straight into pandas, and the key plumbing around them."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pandas as pd
import pytest

from ppml_kernel.data import (
    KeyFileProvider,
    KeyStoreProvider,
    UnknownKeyError,
    WrongKeyError,
    generate_kek,
    import_key_file,
    read_pandas,
    write_key_file,
    write_pandas,
)
from ppml_kernel.data.errors import DatasetError, KeyFileError
from ppml_kernel.keys.files import read_key_file
from ppml_kernel.keys.store import KeyStore


@pytest.fixture
def provider() -> KeyStoreProvider:
    store = KeyStore()
    store.put("k1", generate_kek())
    return KeyStoreProvider(store)


FRAME = pd.DataFrame(
    {
        "id": [1, 2, 3],
        "name": ["a", None, "c, d"],
        "score": [1.5, None, -2.25],
        "day": [dt.date(2024, 1, 1), dt.date(2024, 2, 29), None],
    }
)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_round_trip(tmp_path, provider, fmt):
    path = tmp_path / f"f.{fmt}.ppml"
    write_pandas(FRAME, path, "k1", fmt, provider=provider, header=True)
    raw = path.read_bytes()
    assert b"c, d" not in raw
    back = read_pandas(path, fmt, provider=provider, header=True)
    assert list(back["id"]) == [1, 2, 3]
    assert back["name"].tolist()[::2] == ["a", "c, d"] and pd.isna(back["name"][1])
    assert back["score"].tolist()[0] == 1.5
    with pytest.raises(DatasetError, match="exists"):
        write_pandas(FRAME, path, "k1", fmt, provider=provider)


def test_text_and_directory(tmp_path, provider):
    d = tmp_path / "lines"
    d.mkdir()
    write_pandas(
        pd.DataFrame({"value": ["x", "", "ünï"]}), d / "a.txt.ppml", "k1", "text", provider=provider
    )
    write_pandas(pd.DataFrame({"value": ["y"]}), d / "b.txt.ppml", "k1", "text", provider=provider)
    assert read_pandas(d, "text", provider=provider)["value"].tolist() == ["x", "", "ünï", "y"]


def test_wrong_and_unknown_keys(tmp_path, provider):
    path = tmp_path / "f.csv.ppml"
    write_pandas(FRAME, path, "k1", provider=provider)
    other = KeyStore()
    other.put("k1", generate_kek())
    with pytest.raises(WrongKeyError, match=r"f\.csv\.ppml"):
        read_pandas(path, provider=KeyStoreProvider(other))
    with pytest.raises(UnknownKeyError, match="'k1'"):
        read_pandas(path, provider=KeyStoreProvider(KeyStore()))


def test_key_files(tmp_path):
    kf = write_key_file(tmp_path / "a.key", "team")
    assert stat.S_IMODE(os.stat(kf).st_mode) == 0o600
    _, kek = read_key_file(kf)
    store = KeyStore()
    assert import_key_file(kf, store) == "team" and store.get("team") == kek
    assert "team" in repr(store) and kek.hex() not in repr(store)
    provider = KeyFileProvider(kf)
    assert provider.key_ids() == ["team"]
    (tmp_path / "bad.key").write_text('{"format": "ppml-key/1", "key_id": "x", "key": "SECRET"}')
    os.chmod(tmp_path / "bad.key", 0o600)
    with pytest.raises(KeyFileError) as info:
        read_key_file(tmp_path / "bad.key")
    assert "SECRET" not in str(info.value) and info.value.__cause__ is None
    with pytest.raises(KeyFileError, match="does not exist"):
        read_key_file(tmp_path / "none.key")


def test_keys_sent_as_browser_secrets_are_found_by_key_id(tmp_path):
    """A key sent with %ppml secret NAME (kept by ppml_kernel.secrets) serves key id NAME."""
    import base64
    import json

    from ppml_kernel import secrets as browser
    from ppml_kernel.keys.files import parse_kek_text
    from ppml_kernel.keys.store import default_store

    kek = generate_kek()
    forms = {
        "as-b64": base64.b64encode(kek).decode(),
        "as-hex": kek.hex(),
        "as-file": json.dumps(
            {"format": "ppml-key/1", "key_id": "x", "key": base64.b64encode(kek).decode()}
        ),
    }
    try:
        for name, text in forms.items():
            browser.STORE.put(name, text)
        browser.STORE.put("db-password", "hunter2")
        store = default_store()
        for name in forms:
            assert store.get(name) == kek and name in store
        assert "db-password" not in store.names() and store.get("db-password") is None
        assert parse_kek_text("not a key") is None
        provider = KeyStoreProvider()
        write_pandas(FRAME, tmp_path / "b.csv.ppml", "as-hex", provider=provider)
        assert len(read_pandas(tmp_path / "b.csv.ppml", provider=provider)) == 3
    finally:
        for name in [*forms, "db-password"]:
            browser.STORE.delete(name)
