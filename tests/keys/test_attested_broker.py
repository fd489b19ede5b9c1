"""The key broker and its executor client, in-process: real quotes, real dcap-qvl, no Spark.

Every refusal reason the cluster tests cannot afford a JVM for is exercised here with
real simulated quotes: other code (MRENCLAVE), out-of-date TCB, another installation's
PKI, no TEE at all, simulation not allowed, replayed or relayed quotes. The transport
is hit with malformed requests to show the broker answers errors and keeps serving.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from ppml_kernel.attestation import Policy
from ppml_kernel.keys.broker import protocol as P
from ppml_kernel.keys.broker.attested import KeyBroker
from ppml_kernel.keys.broker.client import (
    BrokerUntrustedError,
    KeyClient,
    KeyRefusedError,
    executor_identity,
)
from ppml_kernel.keys.store import KeyStore
from ppml_kernel.keys.wrap import WrappedKey
from ppml_kernel.tee.base import Attester, AttesterUnavailable
from ppml_kernel.tee.simulated import SimulatedAttester

KEK = bytes(range(100, 132))
OTHER_CODE = "ab" * 32


@pytest.fixture(scope="module")
def pki_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("broker-pki")
    return base / "cluster-pki", base / "rogue-pki"


@pytest.fixture(autouse=True)
def _cluster_pki(isolated_jupyter, pki_dirs, monkeypatch: pytest.MonkeyPatch):
    """Driver and good workers share one simulated PKI (as on one installation)."""
    monkeypatch.setenv("PPML_SIM_PKI_DIR", str(pki_dirs[0]))
    for name in (
        "PPML_SIM_MRENCLAVE",
        "PPML_SIM_TCB_STATUS",
        "PPML_TEE",
        P.ENV_BROKER,
        P.ENV_BROKER_ID,
        P.ENV_DRIVER_POLICY,
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def driver(pki_dirs) -> SimulatedAttester:
    return SimulatedAttester(pki_dir=pki_dirs[0])


@pytest.fixture(scope="module")
def policy(driver) -> Policy:
    return Policy(mrenclave=(driver.mrenclave.hex(),), allow_simulated=True)


@pytest.fixture
def broker(driver, policy):
    with KeyBroker(policy, KeyStore({"kek-1": KEK, "kek-2": KEK[::-1]}), driver) as b:
        yield b


def client_for(broker: KeyBroker, attester: Attester, policy: Policy) -> KeyClient:
    return KeyClient(
        address=broker.address, driver_policy=json.dumps(policy.to_dict()), attester=attester
    )


class NoTEE(Attester):
    """An executor without any TEE: its attester cannot produce evidence."""

    kind = "occlum"

    def quote(self, report_data: bytes) -> bytes:
        raise AttesterUnavailable("/dev/sgx does not exist: not running inside Occlum")


def post(broker: KeyBroker, path: str, body: bytes | dict, headers: dict | None = None):
    conn = http.client.HTTPConnection(broker.host, broker.port, timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers=headers or {})
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, (json.loads(payload) if payload else {})


# -- grants ---------------------------------------------------------------------------


def test_attested_worker_gets_the_key_and_caches_it(broker, driver, policy):
    client = client_for(broker, SimulatedAttester(pki_dir=driver.pki_dir), policy)
    assert client.fetch_key("kek-1") == KEK
    grants = broker.audit.events("grant")
    assert [e.key_ids for e in grants] == [("kek-1",)]
    assert client.fetch_key("kek-1") == KEK  # cached: no new grant
    assert len(broker.audit.events("grant")) == 1
    assert client.fetch_key("kek-2") == KEK[::-1]  # same session, no new attestation
    assert len(broker.audit.events("attest")) == 1
    assert len(broker.audit.events("grant")) == 2
    att = broker.attestations()[0]
    assert att.ok and att.simulated and att.measurement == driver.mrenclave.hex()
    assert "SIMULATED" in att.tee


def test_unknown_key_is_refused_by_name(broker, driver, policy):
    client = client_for(broker, SimulatedAttester(pki_dir=driver.pki_dir), policy)
    with pytest.raises(KeyRefusedError, match="no key with key id 'missing'"):
        client.fetch_key("missing")
    assert broker.audit.events("refuse")[-1].key_ids == ("missing",)


def test_unwrap_keeps_the_kek_in_the_driver(driver, policy):
    seen = []

    def unwrap(key_id: str, wrapped: WrappedKey, context: bytes) -> bytes:
        seen.append((key_id, wrapped, context))
        return bytes(a ^ b for a, b in zip(wrapped.ciphertext, KEK, strict=True))

    with KeyBroker(policy, KeyStore({"kek-1": KEK}), driver, unwrapper=unwrap) as b:
        client = client_for(b, SimulatedAttester(pki_dir=driver.pki_dir), policy)
        wrapped = WrappedKey(b"\x01" * 8, b"\x02" * 12, bytes(32))
        assert client.unwrap_key("kek-1", wrapped, b"header") == KEK
        assert client.unwrap_key("kek-1", wrapped, b"header") == KEK  # cached
        assert len(seen) == 1 and seen[0][2] == b"header"
        assert client._keks == {}  # the KEK itself never reached the worker


def test_writers_wrap_through_the_driver(driver, policy):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    def wrap(key_id: str, data_key: bytes, context: bytes) -> WrappedKey:
        nonce = os.urandom(12)
        return WrappedKey(
            b"kcv-" + key_id.encode()[:4], nonce, AESGCM(KEK).encrypt(nonce, data_key, context)
        )

    def unwrap(key_id: str, wrapped: WrappedKey, context: bytes) -> bytes:
        return AESGCM(KEK).decrypt(wrapped.nonce, wrapped.ciphertext, context)

    with KeyBroker(policy, KeyStore({"kek-1": KEK}), driver, wrapper=wrap, unwrapper=unwrap) as b:
        writer = client_for(b, SimulatedAttester(pki_dir=driver.pki_dir), policy)
        data_key = os.urandom(32)
        wrapped = writer.wrap_key("kek-1", data_key, b"file header")
        assert wrapped.key_check == b"kcv-kek-" and data_key not in wrapped.ciphertext
        reader = client_for(b, SimulatedAttester(pki_dir=driver.pki_dir), policy)
        assert reader.unwrap_key("kek-1", wrapped, b"file header") == data_key
        with pytest.raises(KeyRefusedError, match=r"InvalidTag while unwrapping"):
            reader.unwrap_key("kek-1", wrapped, b"another header")
        assert writer._keks == {} and reader._keks == {}
        kinds = [e.reason for e in b.audit.events("grant")]
        assert kinds == ["wrap", "unwrap"]


def test_unwrap_without_dataset_layer_or_key_is_refused(broker, driver, policy):
    client = client_for(broker, SimulatedAttester(pki_dir=driver.pki_dir), policy)
    wrapped = WrappedKey(b"\x01" * 8, b"\x02" * 12, bytes(48))
    with pytest.raises(KeyRefusedError):
        client.unwrap_key("nope", wrapped, b"ctx")


# -- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d, r: SimulatedAttester(pki_dir=d, mrenclave=OTHER_CODE), "mrenclave is abab"),
        (
            lambda d, r: SimulatedAttester(pki_dir=d, tcb_status="OutOfDate"),
            "tcb_status is OutOfDate",
        ),
        (lambda d, r: SimulatedAttester(pki_dir=r), "root that is not trusted"),
        (lambda d, r: NoTEE(), "not an enclave: AttesterUnavailable: /dev/sgx does not exist"),
    ],
    ids=["other-code", "tcb-out-of-date", "rogue-pki", "no-tee"],
)
def test_untrusted_executors_get_no_key(broker, driver, policy, pki_dirs, make, reason):
    attester = make(driver.pki_dir, pki_dirs[1])
    client = client_for(broker, attester, policy)
    with pytest.raises(KeyRefusedError) as info:
        client.fetch_key("kek-1")
    message = str(info.value)
    assert reason in message
    assert "refused this executor" in message
    assert "executor" in message and str(os.getpid()) in message  # names the worker
    assert client._keks == {}
    assert not broker.audit.events("grant")
    refusal = broker.audit.refusals()[-1]
    assert reason.split(":")[0] in refusal.reason
    # The broker still serves a good worker afterwards.
    good = client_for(broker, SimulatedAttester(pki_dir=driver.pki_dir), policy)
    assert good.fetch_key("kek-1") == KEK


def test_simulation_refused_unless_policy_allows(driver):
    strict = Policy(mrenclave=(driver.mrenclave.hex(),))  # allow_simulated False
    with KeyBroker(strict, KeyStore({"kek-1": KEK}), driver) as b:
        client = client_for(
            b, SimulatedAttester(pki_dir=driver.pki_dir), Policy(allow_simulated=True)
        )
        with pytest.raises(KeyRefusedError, match="SIMULATED enclave"):
            client.fetch_key("kek-1")


def test_nonce_is_single_use_and_bound_to_the_worker_key(broker, driver):
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    def pub() -> bytes:
        return (
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        )

    _, hello = post(broker, "/v1/hello", {})
    nonce = base64.b64decode(hello["nonce"])
    key_a, key_b = pub(), pub()
    quote = driver.quote(P.worker_report_data(broker.broker_key, nonce, key_a))
    relayed = {
        "nonce": hello["nonce"],
        "worker_key": P.b64e(key_b),
        "quote": P.b64e(quote),
        "keys": ["kek-1"],
    }
    status, body = post(broker, "/v1/attest", relayed)
    assert status == 403 and "does not bind this broker's nonce" in body["error"]
    # The nonce was used up by that attempt, even with the right key now.
    honest = dict(relayed, worker_key=P.b64e(key_a))
    status, body = post(broker, "/v1/attest", honest)
    assert status == 403 and "unknown, used or expired nonce" in body["error"]
    assert not broker.audit.events("grant")


def test_worker_refuses_a_broker_that_is_not_the_attested_driver(driver, policy, pki_dirs):
    impostor = SimulatedAttester(pki_dir=driver.pki_dir, mrenclave=OTHER_CODE)
    with KeyBroker(policy.__class__(allow_simulated=True), KeyStore({"kek-1": KEK}), impostor) as b:
        client = client_for(b, SimulatedAttester(pki_dir=driver.pki_dir), policy)
        with pytest.raises(BrokerUntrustedError, match="not an attested driver"):
            client.fetch_key("kek-1")
        assert client._keks == {}


def test_worker_refuses_a_broker_without_driver_policy(broker, driver):
    client = KeyClient(
        address=broker.address, driver_policy="", attester=SimulatedAttester(pki_dir=driver.pki_dir)
    )
    with pytest.raises(BrokerUntrustedError, match="PPML_DRIVER_POLICY"):
        client.fetch_key("kek-1")


def test_worker_refuses_a_broker_with_another_pinned_key(broker, driver, policy, monkeypatch):
    monkeypatch.setenv(P.ENV_BROKER_ID, "00" * 32)
    client = client_for(broker, SimulatedAttester(pki_dir=driver.pki_dir), policy)
    with pytest.raises(BrokerUntrustedError, match="not the one this application"):
        client.fetch_key("kek-1")


def test_expired_session_reattests(broker, driver, policy):
    client = client_for(broker, SimulatedAttester(pki_dir=driver.pki_dir), policy)
    client.fetch_key("kek-1")
    broker._sessions.clear()  # as after session_ttl
    assert client.fetch_key("kek-2") == KEK[::-1]
    assert len(broker.audit.events("attest")) == 2


# -- transport robustness -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v1/attest", b"not json", 400, "not JSON"),
        ("/v1/attest", b"[1, 2]", 400, "JSON object"),
        ("/v1/attest", {"nonce": 5}, 400, "nonce"),
        ("/v1/attest", {"nonce": "!!!"}, 400, "not valid base64"),
        (
            "/v1/attest",
            {"nonce": P.b64e(b"x" * 32), "worker_key": P.b64e(b"\x04" + b"1" * 64)},
            400,
            "worker_key",
        ),
        (
            "/v1/attest",
            {"nonce": P.b64e(b"x" * 32), "worker_key": P.b64e(b"1" * 65), "keys": "kek-1"},
            400,
            "must be lists",
        ),
        ("/v1/keys", {"session": P.b64e(b"s" * 16), "keys": ["kek-1"]}, 401, "attest again"),
        ("/v1/keys", {"session": P.b64e(b"s" * 16), "keys": ["\x00bad"]}, 400, "invalid key id"),
        ("/v1/nothing", {}, 404, "no such endpoint"),
    ],
)
def test_malformed_requests_get_errors(broker, driver, policy, path, body, status, fragment):
    got, payload = post(broker, path, body)
    assert got == status
    assert fragment in payload["error"]
    good = client_for(broker, SimulatedAttester(pki_dir=driver.pki_dir), policy)
    assert good.fetch_key("kek-1") == KEK


def test_oversized_and_truncated_requests(driver, policy):
    with KeyBroker(policy, KeyStore({"kek-1": KEK}), driver, io_timeout=2) as broker:
        status, _ = post(broker, "/v1/attest", b"x" * (P.MAX_REQUEST_BYTES + 1))
        assert status == 413
        # A client that promises a body and never sends it is dropped after the timeout.
        with socket.create_connection((broker.host, broker.port), timeout=10) as s:
            s.sendall(b"POST /v1/attest HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
            t0 = time.monotonic()
            assert s.recv(100) == b""
            assert 1.5 <= time.monotonic() - t0 < 10  # dropped, not held until our own timeout
        good = client_for(broker, SimulatedAttester(pki_dir=driver.pki_dir), policy)
        assert good.fetch_key("kek-1") == KEK


def test_connection_cap_answers_busy(driver, policy):
    with KeyBroker(policy, KeyStore({"kek-1": KEK}), driver, max_connections=2, io_timeout=3) as b:
        idle = [socket.create_connection((b.host, b.port)) for _ in range(2)]
        time.sleep(0.3)
        status, _ = _raw_status(b)
        assert status == 503
        for s in idle:
            s.close()
        time.sleep(0.3)
        status, _ = _raw_status(b)
        assert status == 200


def _raw_status(b: KeyBroker) -> tuple[int, bytes]:
    with socket.create_connection((b.host, b.port), timeout=5) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return int(data.split()[1]), data


def test_concurrent_workers(broker, driver, policy):
    results: list[bytes] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            c = client_for(broker, SimulatedAttester(pki_dir=driver.pki_dir), policy)
            results.append(c.fetch_key("kek-1"))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and results == [KEK] * 8


# -- no key material where it must not be ---------------------------------------------


def test_audit_log_and_reprs_hold_no_key(tmp_path, driver, policy, pki_dirs):
    audit_file = tmp_path / "audit.jsonl"
    from ppml_kernel.keys.broker.audit import AuditLog
    from ppml_kernel.spark.display import BrokerStatus, audit_table

    with KeyBroker(policy, KeyStore({"kek-1": KEK}), driver, audit=AuditLog(audit_file)) as b:
        good = client_for(b, SimulatedAttester(pki_dir=driver.pki_dir), policy)
        good.fetch_key("kek-1")
        with pytest.raises(KeyRefusedError):
            client_for(b, SimulatedAttester(pki_dir=pki_dirs[1]), policy).fetch_key("kek-1")
        texts = [
            audit_file.read_text(),
            repr(audit_table(b)),
            audit_table(b)._repr_html_(),
            repr(good),
            repr(b.keys),
            repr(b),
            repr(BrokerStatus(b)),
            BrokerStatus(b)._repr_html_(),
        ]
    assert stat.S_IMODE(audit_file.stat().st_mode) == 0o600
    lines = [json.loads(x) for x in audit_file.read_text().splitlines()]
    assert {x["event"] for x in lines} >= {"attest", "grant"}
    assert any(not x["ok"] for x in lines)
    for forbidden in (KEK.hex(), base64.b64encode(KEK).decode(), KEK.decode("latin-1")):
        for text in texts:
            assert forbidden not in text


def test_executor_identity_from_standalone_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(
        "SPARK_LOG_URL_STDERR",
        "http://h:1/logPage/?appId=app-2026-0001&executorId=7&logType=stderr",
    )
    monkeypatch.setenv("SPARK_LOCAL_IP", "10.0.0.5")
    ident = executor_identity("simulated")
    assert ident["executor_id"] == "7" and ident["app_id"] == "app-2026-0001"
    assert ident["host"] == "10.0.0.5"
    monkeypatch.delenv("SPARK_LOG_URL_STDERR")
    work = tmp_path / "app-2026-0002" / "3"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert executor_identity()["executor_id"] == "3"


def test_forked_process_gets_its_own_client():
    from ppml_kernel.keys.broker import client as keyclient

    parent = keyclient.client()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a fresh client, not the parent's cached keys
        os.close(read)
        same = keyclient.client() is parent
        os.write(write, b"1" if same else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"0"
    os.waitpid(pid, 0)
    assert keyclient.client() is parent


# -- settings -------------------------------------------------------------------------


def test_private_properties_file(tmp_path):
    from ppml_kernel.spark.security import daemon_properties, write_private_properties

    path = write_private_properties(tmp_path / "p.properties", daemon_properties("s3cr=t x"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "spark.authenticate.secret=s3cr\\=t\\ x" in text
    assert "spark.network.crypto.cipher=AES/GCM/NoPadding" in text
    with pytest.raises(FileExistsError):
        write_private_properties(path, {})


def test_security_report_flags_weak_settings():
    from ppml_kernel.spark.security import SecurityReport, driver_settings

    good = SecurityReport.from_conf(
        driver_settings("4.3.0", "spark://h:7077"),
        master="spark://h:7077",
        secret_origin="x",
        broker="b:1",
        policy_summary="p",
    )
    assert {r.level for r in good.rows} <= {"good", "info"}
    weak = SecurityReport.from_conf(
        {"spark.authenticate": "true", "spark.network.crypto.enabled": "true"},
        master="local[2]",
        secret_origin="x",
        broker=None,
        policy_summary=None,
    )
    assert weak.level("RPC encryption") == "warn"  # CTR default: not authenticated
    assert weak.level("I/O encryption") == "bad"
    assert weak.level("Web UI") == "warn"
    assert "AES/CTR" in repr(weak)
    assert "spark.python.unix.domain.socket.enabled" not in driver_settings("4.0.1", "x")


def test_connect_refuses_secret_in_conf():
    from ppml_kernel.spark.connect import ConnectError, connect

    with pytest.raises(ConnectError, match="secret-file"):
        connect("local[1]", conf={"spark.authenticate.secret": "x"})


def test_standalone_without_secret_is_an_error(monkeypatch):
    from ppml_kernel.spark.connect import ConnectError, resolve_secret

    monkeypatch.delenv("PPML_SPARK_AUTH_SECRET_FILE", raising=False)
    with pytest.raises(ConnectError, match="--secret-file"):
        resolve_secret("spark://10.1.1.1:7077", None, None)


def test_secret_file_must_be_private(tmp_path):
    from ppml_kernel.spark.connect import ConnectError, resolve_secret

    f = tmp_path / "secret"
    f.write_text("0123456789abcdef0123")
    f.chmod(0o644)
    with pytest.raises(ConnectError, match="chmod 600"):
        resolve_secret("spark://h:7077", None, str(f))
    f.chmod(0o600)
    secret, origin = resolve_secret("spark://h:7077", None, str(f))
    assert secret == "0123456789abcdef0123" and str(f) in origin


def test_spark_magics_without_a_session(monkeypatch):
    from IPython.testing.globalipapp import get_ipython

    from ppml_kernel.magics.ppml import run
    from ppml_kernel.magics.registry import MagicError

    shell = get_ipython()
    status = repr(run("spark status", None, shell))  # no cluster: the local session, if any
    assert "No Spark session yet" in status or "session      local:" in status, status
    assert "No Spark session" in repr(run("spark stop", None, shell))
    with pytest.raises(MagicError, match="KEY=VALUE"):
        run("spark connect local[1] --conf nonsense", None, shell)
    with pytest.raises(MagicError, match="secret-file"):
        run("spark connect local[1] --conf spark.authenticate.secret=abc", None, shell)
    help_text = repr(run("help", None, shell))
    assert "spark connect" in help_text and "spark status" in help_text
