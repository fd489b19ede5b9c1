"""One key-id rule (issue 11, item 14): the file format, key files and the cluster broker agree.

Before, a file header took 1-95 characters from a fixed set while the cluster broker
took 1-128 printable characters, so the broker accepted ids no file can carry (and a
space or a quote in an id reached its logs). Now both call
:func:`ppml_kernel.keys.ids.check_key_id`.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from ppml_kernel.data import format as F
from ppml_kernel.keys import ids
from ppml_kernel.keys.broker import protocol as P
from ppml_kernel.keys.broker.attested import KeyBroker
from ppml_kernel.keys.broker.client import KeyClient
from ppml_kernel.keys.files import KeyFileProvider, write_key_file
from ppml_kernel.keys.store import KeyStore

PACKAGE = Path(__file__).resolve().parents[2] / "ppml_kernel"

GOOD = ["k", "sales-2024", "a" * 95, "team/sales:2024@eu+v1.2_x", "0lead-digit"]
BAD = ["", "a" * 96, "a" * 128, "has space", "-lead", ".hidden", "é", "quote'd", "tab\there",
       "new\nline", "a;b", "x" * 10_000]


@pytest.mark.parametrize("value", GOOD)
def test_good_ids_pass_everywhere(value, tmp_path):
    assert ids.check_key_id(value) == value
    assert P.check_key_id(value) == value
    header, _ = F.new_header(KeyFileProvider(write_key_file(tmp_path / "k.key", value)), value)
    assert F.Header.parse(header.to_bytes(), "f").key_id == value
    KeyStore({value: bytes(32)})


@pytest.mark.parametrize("value", [*BAD, None, 5, b"bytes"])
def test_bad_ids_fail_everywhere_with_one_message(value, tmp_path):
    with pytest.raises(ids.KeyIdError) as rule:
        ids.check_key_id(value)
    message = str(rule.value)
    assert len(message) < 200  # never echoes an unbounded value
    with pytest.raises(P.ProtocolError) as proto:
        P.check_key_id(value, "keys[0]")
    assert str(proto.value) == f"field 'keys[0]': {message}"
    with pytest.raises(ValueError, match="key id"):
        KeyStore({value: bytes(32)})  # type: ignore[dict-item]
    if isinstance(value, str):
        with pytest.raises(ValueError, match="key id"):
            write_key_file(tmp_path / "k.key", value)
        with pytest.raises(ValueError, match="key id"):
            KeyClient(address="127.0.0.1:9", driver_policy="{}").fetch_key(value)


def test_the_data_layer_uses_the_same_function():
    assert F.check_key_id is ids.check_key_id
    assert F.KEY_ID_MAX == ids.KEY_ID_MAX == 95


@pytest.mark.parametrize("value", ["has space", "a" * 100, "é"])
def test_the_cluster_broker_refuses_ids_no_file_can_carry(isolated_jupyter, tmp_path, value):
    """The broker answers 400 naming the field (it used to accept them as printable text)."""
    import http.client

    from ppml_kernel.attestation import Policy
    from ppml_kernel.tee.simulated import SimulatedAttester

    driver = SimulatedAttester(pki_dir=tmp_path / "pki")
    policy = Policy(mrenclave=(driver.mrenclave.hex(),), allow_simulated=True)
    with KeyBroker(policy, KeyStore({"k": bytes(32)}), driver) as broker:
        conn = http.client.HTTPConnection(broker.host, broker.port, timeout=10)
        body = {"session": P.b64e(b"s" * 16), "keys": [value]}
        conn.request("POST", "/v1/keys", body=json.dumps(body).encode())
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        conn.close()
    assert resp.status == 400
    assert "field 'keys[0]'" in answer["error"] and "key id" in answer["error"]


# Base modules import only each other (secrets: the browser's secrets, as text).
BASE_MODULES = ("ppml_kernel.errors", "ppml_kernel._lazy", "ppml_kernel._named",
                "ppml_kernel.crypto", "ppml_kernel.b64", "ppml_kernel.secrets")


def test_keys_package_imports_only_attestation_tee_and_base_modules():
    allowed = ("ppml_kernel.keys", "ppml_kernel.attestation", "ppml_kernel.tee", *BASE_MODULES)
    for path in sorted((PACKAGE / "keys").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module == "ppml_kernel":
                names = [f"ppml_kernel.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.startswith("ppml_kernel"):
                    assert name.startswith(allowed), f"{path.name} imports {name}"


def test_no_other_key_id_rule_is_defined():
    """Only keys/ids.py holds the rule; the broker's protocol only renames its error."""
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if path.name == "ids.py" and path.parent.name == "keys":
            continue
        assert "_KEY_ID_CHARS" not in text and "MAX_KEY_ID_CHARS" not in text, path
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.FunctionDef) and node.name == "check_key_id":
                assert path.name == "protocol.py", path
                assert "_ids.check_key_id(value)" in ast.get_source_segment(text, node)


def test_browser_secrets_are_listed_as_keys_only_under_valid_key_ids():
    import base64

    from ppml_kernel.keys.store import KernelKeyStore
    from ppml_kernel.secrets import STORE

    key_text = base64.b64encode(bytes(range(32))).decode()
    STORE.put("sales-2024", key_text)
    STORE.put("_scratch", key_text)  # a fine secret name, but no header can carry it
    try:
        names = KernelKeyStore().names()
        assert "sales-2024" in names and "_scratch" not in names
    finally:
        STORE.delete("sales-2024")
        STORE.delete("_scratch")
