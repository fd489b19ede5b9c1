"""The local key broker without peer credentials (issue 11, item 12).

Where ``SO_PEERCRED`` is missing (macOS) the broker cannot tell Spark's workers from any
other process of the user. It used to serve everyone silently; now it refuses to start
unless ``PPML_KEY_BROKER_PEERS=same-user`` chooses that weaker mode. The absence of
peer credentials is simulated by removing ``socket.SO_PEERCRED`` for the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from ppml_kernel.data.errors import DatasetKeyError
from ppml_kernel.data.format import new_header
from ppml_kernel.keys.broker import local as B
from ppml_kernel.keys.files import KeyFileProvider, write_key_file


@pytest.fixture
def private_tmp(monkeypatch: pytest.MonkeyPatch):
    """A short temp dir of our own for the socket directory (Unix socket paths are short)."""
    base = tempfile.mkdtemp(prefix="ppml-peers-", dir="/tmp")
    monkeypatch.setattr(tempfile, "tempdir", base)
    monkeypatch.delenv(B.ENV_PEERS, raising=False)
    yield Path(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def provider(private_tmp: Path) -> KeyFileProvider:
    return KeyFileProvider(write_key_file(private_tmp / "k.key", "k1"))


def test_without_peer_credentials_the_broker_refuses_to_start(private_tmp, provider, monkeypatch):
    monkeypatch.delattr(socket, "SO_PEERCRED")
    with pytest.raises(DatasetKeyError) as err:
        B.LocalKeyBroker(provider)
    message = str(err.value)
    assert "cannot tell which process is asking" in message
    assert f"{B.ENV_PEERS}={B.PEERS_SAME_USER}" in message
    assert not list(B.socket_dir().glob("broker-*.sock"))  # nothing listened


def test_the_weaker_mode_must_be_chosen_and_then_works(private_tmp, provider, monkeypatch):
    monkeypatch.delattr(socket, "SO_PEERCRED")
    monkeypatch.setenv(B.ENV_PEERS, B.PEERS_SAME_USER)
    broker = B.LocalKeyBroker(provider)
    try:
        assert broker.peers == B.PEERS_SAME_USER
        header, data_key = new_header(provider, "k1")
        client = B.BrokerClient(broker.path)
        assert client.unwrap("k1", header.wrapped, header.wrap_context()) == data_key
    finally:
        broker.close()


def test_unknown_peer_mode_is_an_error_naming_the_variable(private_tmp, provider, monkeypatch):
    monkeypatch.setenv(B.ENV_PEERS, "anyone")
    with pytest.raises(DatasetKeyError, match=B.ENV_PEERS):
        B.LocalKeyBroker(provider)


def test_with_peer_credentials_the_default_is_descendants(private_tmp, provider):
    if not B.peer_pids_available():  # pragma: no cover - this suite runs on Linux
        pytest.fail("these tests expect Linux peer credentials (SO_PEERCRED and /proc)")
    broker = B.LocalKeyBroker(provider)
    try:
        assert broker.peers == B.PEERS_DESCENDANTS
        header, data_key = new_header(provider, "k1")
        assert B.BrokerClient(broker.path).unwrap("k1", header.wrapped,
                                                  header.wrap_context()) == data_key
    finally:
        broker.close()


def test_the_local_broker_applies_the_one_key_id_rule(private_tmp, provider):
    broker = B.LocalKeyBroker(provider)
    try:
        header, _ = new_header(provider, "k1")
        with pytest.raises(DatasetKeyError, match="invalid key id"):
            B.BrokerClient(broker.path).unwrap("k 1", header.wrapped, header.wrap_context())
    finally:
        broker.close()


def test_the_local_broker_audits_grants_and_refusals_without_keys(private_tmp, provider):
    """Both brokers answer through one core, so the local one is audited like the cluster's."""
    from ppml_kernel.data.errors import UnknownKeyError

    broker = B.LocalKeyBroker(provider)
    try:
        header, data_key = new_header(provider, "k1")
        client = B.BrokerClient(broker.path)
        assert client.unwrap("k1", header.wrapped, header.wrap_context()) == data_key
        with pytest.raises(UnknownKeyError):
            client.unwrap("other", header.wrapped, header.wrap_context())
    finally:
        broker.close()
    events = broker.audit.events()
    assert [(e.event, e.ok, e.key_ids) for e in events] == [
        ("grant", True, ("k1",)), ("refuse", False, ("other",))
    ]
    assert all(e.executor == f"process {os.getpid()}" for e in events)
    assert "no key with key id 'other'" in events[1].reason
    text = "".join(e.line() for e in events)
    assert data_key.hex() not in text and provider.kek("k1").hex() not in text
