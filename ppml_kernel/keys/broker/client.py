"""Executor side of the key broker: attest once per Python worker process, then pull keys.

The dataset reader calls :func:`fetch_key` (a KEK by key id) or :func:`unwrap_key` (one
file's wrapped data key, opened by the driver so the KEK never leaves it). The first
call in a process makes an ephemeral P-256 key, asks the broker for a nonce, quotes
(REPORT_DATA binds the broker key, the nonce and the worker key), and gets the keys
sealed to that worker key. Before opening them it verifies the driver's quote over
the broker key with ``$PPML_DRIVER_POLICY``. Keys stay in this process's memory only:
never in the environment, a file, a log line or an exception message.

Where the broker is: ``$PPML_CLUSTER_BROKER`` (``host:port``), set by the driver through
``spark.executorEnv``. A refusal raises :class:`KeyRefusedError` naming this executor
and the broker's reason, which Spark shows as the task's (and the job's) error.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ppml_kernel import crypto
from ppml_kernel.keys.broker import protocol as P
from ppml_kernel.keys.errors import DatasetKeyError
from ppml_kernel.keys.provider import KeyProvider
from ppml_kernel.keys.wrap import WrappedKey

if TYPE_CHECKING:
    from ppml_kernel.tee.base import Attester

DEFAULT_TIMEOUT = 15.0
_URL_EXECUTOR = re.compile(r"executorId=([A-Za-z0-9_.-]{1,32})")
_URL_APP = re.compile(r"appId=([A-Za-z0-9_.-]{1,64})")


class KeyClientError(DatasetKeyError, RuntimeError):
    """No key could be obtained (the message names the executor and the reason)."""


class KeyRefusedError(KeyClientError):
    """The driver's key broker refused this executor or one of its key requests."""


class BrokerUnreachableError(KeyClientError):
    """The key broker could not be reached or answered nonsense."""


class BrokerUntrustedError(KeyClientError):
    """The broker did not prove it is the attested driver: no key is used from it."""


class _NoAnswer(BrokerUnreachableError):
    """A request that must not be resent went out, and no answer came back."""


ATTEST_ROUNDS = 3  # hello + quote + attest, each round from a fresh nonce


def executor_identity(tee: str = "") -> dict[str, str]:
    """Labels naming this worker process (untrusted; for messages, never for decisions).

    Python workers cannot see their executor id (BRIEF §6); Kubernetes sets
    ``SPARK_EXECUTOR_ID``, standalone puts it in the log URLs and the work directory.
    """
    executor_id = os.environ.get("SPARK_EXECUTOR_ID", "")
    app_id = os.environ.get("SPARK_APPLICATION_ID", "")
    url = os.environ.get("SPARK_LOG_URL_STDERR", "")
    if not executor_id and (m := _URL_EXECUTOR.search(url)):
        executor_id = m.group(1)
    if not app_id and (m := _URL_APP.search(url)):
        app_id = m.group(1)
    if not executor_id:
        cwd = os.getcwd()
        parent, last = os.path.split(cwd)
        if os.path.basename(parent).startswith("app-"):
            executor_id, app_id = last, app_id or os.path.basename(parent)
    host = (
        os.environ.get("SPARK_EXECUTOR_POD_IP")
        or os.environ.get("SPARK_LOCAL_IP")
        or socket.gethostname()
    )
    return {
        "executor_id": executor_id,
        "app_id": app_id,
        "host": host,
        "pid": str(os.getpid()),
        "tee": tee,
    }


def describe_executor(identity: dict[str, str]) -> str:
    who = f"executor {identity['executor_id']}" if identity.get("executor_id") else "executor ?"
    return f"{who} on {identity.get('host') or '?'} (pid {identity.get('pid')})"


def _parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise BrokerUnreachableError(f"${P.ENV_BROKER} must be host:port, got {text!r}")
    return host.strip("[]"), int(port)


def _load_driver_policy(text: str | None):
    from ppml_kernel.attestation import Policy, PolicyError

    if not text:
        raise BrokerUntrustedError(
            f"${P.ENV_DRIVER_POLICY} is not set: this executor cannot check that the key "
            "broker is an attested driver, so it uses no key from it"
        )
    try:
        if text.lstrip().startswith("{"):
            return Policy.from_dict(json.loads(text))
        return Policy.load(text)
    except (PolicyError, ValueError) as exc:
        raise BrokerUntrustedError(f"${P.ENV_DRIVER_POLICY} is invalid: {exc}") from None


@dataclass
class Timing:
    """Milliseconds spent in the last attestation (for benchmarks and status)."""

    hello_ms: float = 0.0
    quote_ms: float = 0.0
    attest_ms: float = 0.0
    driver_verify_ms: float = 0.0
    total_ms: float = 0.0


@dataclass
class _Session:
    id: bytes
    aead: crypto.Aead
    broker_key: bytes
    executor: str


@dataclass
class KeyClient:
    """One per worker process: its ephemeral key, its broker session, its key cache."""

    address: str | None = None
    driver_policy: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    attester: Attester | None = None
    timing: Timing = field(default_factory=Timing)
    _session: _Session | None = None
    _keks: dict[str, bytes] = field(default_factory=dict, repr=False)
    _data_keys: dict[bytes, bytes] = field(default_factory=dict, repr=False)
    _wrapped: dict[bytes, WrappedKey] = field(default_factory=dict, repr=False)
    _verified_brokers: set[bytes] = field(default_factory=set, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        self.address = self.address or os.environ.get(P.ENV_BROKER, "")
        if self.driver_policy is None:
            self.driver_policy = os.environ.get(P.ENV_DRIVER_POLICY, "")

    # -- public -------------------------------------------------------------------
    def fetch_key(self, key_id: str) -> bytes:
        """The KEK ``key_id`` from the driver (cached in this process after the first call)."""
        P.check_key_id(key_id)
        with self._lock:
            cached = self._keks.get(key_id)
            if cached is not None:
                return cached
            self._request([key_id], [])
            return self._keks[key_id]

    def unwrap_key(self, key_id: str, wrapped: WrappedKey, context: bytes) -> bytes:
        """A file's data key: the driver opens ``wrapped`` with its KEK and seals the result."""
        P.check_key_id(key_id)
        item = {
            "key_id": key_id,
            "key_check": P.b64e(bytes(wrapped.key_check)),
            "nonce": P.b64e(bytes(wrapped.nonce)),
            "ciphertext": P.b64e(bytes(wrapped.ciphertext)),
            "context": P.b64e(bytes(context)),
        }
        digest = P.unwrap_digest(key_id, bytes(wrapped.key_check), bytes(wrapped.nonce),
                                 bytes(wrapped.ciphertext), bytes(context))
        with self._lock:
            cached = self._data_keys.get(digest)
            if cached is not None:
                return cached
            self._request([], [item])
            return self._data_keys[digest]

    def wrap_key(self, key_id: str, data_key: bytes, context: bytes) -> WrappedKey:
        """Seal a new data key under the driver's KEK ``key_id`` (for writers).

        The data key travels sealed under this worker's session key; the KEK stays in
        the driver. Needs a session, so the first call in a process attests.
        """
        P.check_key_id(key_id)
        with self._lock:
            for attempt in (0, 1):
                if self._session is None:
                    self._attest([], [])
                session = self._session
                assert session is not None
                nonce = os.urandom(12)
                sealed = session.aead.encrypt(nonce, bytes(data_key),
                                              P.wrap_request_aad(session.id, key_id, context))
                digest = P.wrap_digest(key_id, nonce, sealed, bytes(context))
                item = {"key_id": key_id, "nonce": P.b64e(nonce), "sealed": P.b64e(sealed),
                        "context": P.b64e(bytes(context))}
                status, body = self._call(
                    "/v1/keys",
                    {"session": P.b64e(session.id), "wrap": [item]},
                )
                if status == 401 and attempt == 0:
                    self._session = None
                    continue
                if status != 200:
                    raise self._refusal(status, body)
                self._open_grants(session, body, [], [], wrap_digests=[digest])
                return self._wrapped.pop(digest)
        raise KeyRefusedError("the key broker keeps rejecting this worker's session")

    def probe(self, probe_id: str) -> dict[str, object]:
        """Attest now (no keys) and report the outcome; never raises (for the sweep)."""
        t0 = time.perf_counter()
        with self._lock:
            try:
                self._attest([], [], probe=probe_id)
                ok, reason = True, "accepted"
            except KeyClientError as exc:
                ok, reason = False, str(exc)
            except Exception as exc:  # boundary: a probe reports; it must not fail the stage
                ok, reason = False, f"{type(exc).__name__} in the probe"
        identity = executor_identity(self._tee_kind())
        return {**identity, "ok": ok, "reason": reason,
                "ms": (time.perf_counter() - t0) * 1e3, "probe": probe_id}

    def forget(self) -> None:
        """Drop the session and every cached key (e.g. after the driver rotated keys)."""
        with self._lock:
            self._session = None
            self._keks.clear()
            self._data_keys.clear()

    def __repr__(self) -> str:  # keys never appear, only how many
        session = "yes" if self._session else "no"
        cached = len(self._keks) + len(self._data_keys)
        return f"<KeyClient broker={self.address or '?'} session={session} cached={cached}>"

    # -- internals ----------------------------------------------------------------
    def _tee_kind(self) -> str:
        try:
            return str(self._attester().kind)
        except Exception:  # best-effort: any attester failure means no TEE to name
            return "none"

    def _attester(self) -> Attester:
        if self.attester is None:
            from ppml_kernel.tee import get_attester

            self.attester = get_attester()
        return self.attester

    def _request(self, kek_ids: list[str], unwraps: list[dict[str, str]]) -> None:
        if self._session is not None:
            status, body = self._call(
                "/v1/keys",
                {"session": P.b64e(self._session.id), "keys": kek_ids, "unwrap": unwraps},
            )
            if status == 200:
                self._open_grants(self._session, body, kek_ids, unwraps)
                return
            if status != 401:
                raise self._refusal(status, body)
            self._session = None
        self._attest(kek_ids, unwraps)

    def _connect(self) -> http.client.HTTPConnection:
        if not self.address:
            raise BrokerUnreachableError(
                f"${P.ENV_BROKER} is not set: this executor does not know the driver's key broker"
            )
        host, port = _parse_address(self.address)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _call(self, path: str, body: dict[str, object]) -> tuple[int, dict[str, Any]]:
        """One request on its own connection, closed afterwards (no socket left to GC)."""
        conn = self._connect()
        try:
            return self._post(conn, path, body)
        finally:
            conn.close()

    def _post(self, conn: http.client.HTTPConnection, path: str,
              body: dict[str, object], *, resend: bool = True) -> tuple[int, dict[str, Any]]:
        """POST and read the JSON answer; connection errors are retried only if ``resend``.

        ``/v1/attest`` uses its nonce up when the broker reads it, so sending it again
        after a lost answer can only be refused ("used nonce"): it is never resent
        (:class:`_NoAnswer`), the caller starts over from hello instead.
        """
        data = json.dumps(body).encode("utf-8")
        last: Exception | None = None
        for attempt in range(3 if resend else 1):
            try:
                conn.request("POST", path, body=data,
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                raw = response.read(P.MAX_RESPONSE_BYTES + 1)
                if len(raw) > P.MAX_RESPONSE_BYTES:
                    raise BrokerUnreachableError("the key broker's answer is too large")
                if response.status == 503:
                    raise ConnectionError("broker busy")
                try:
                    payload = json.loads(raw) if raw else {}
                except ValueError:
                    raise BrokerUnreachableError(
                        f"the key broker at {self.address} did not answer JSON"
                    ) from None
                if not isinstance(payload, dict):
                    raise BrokerUnreachableError("the key broker's answer is not an object")
                return response.status, payload
            except (OSError, http.client.HTTPException) as exc:
                last = exc
                conn.close()
                if resend:
                    time.sleep(0.1 * (attempt + 1))
        if not resend:
            raise _NoAnswer(f"{type(last).__name__}: {last}")
        raise BrokerUnreachableError(
            f"{describe_executor(executor_identity())}: cannot reach the driver's key broker "
            f"at {self.address}: {type(last).__name__}: {last}"
        )

    def _refusal(self, status: int, body: dict[str, Any]) -> KeyClientError:
        who = P.clean_text(body.get("executor")) or describe_executor(executor_identity())
        reason = P.clean_text(body.get("error") or f"HTTP {status}", 500)
        if status == 403:
            return KeyRefusedError(
                f"{who}: the driver's key broker at {self.address} refused this executor: {reason}"
            )
        return BrokerUnreachableError(f"{who}: key broker at {self.address}: {reason}")

    def _attest(self, kek_ids: list[str], unwraps: list[dict[str, str]],
                probe: str = "") -> None:
        """Attest and take the grants; a lost attest answer restarts from hello."""
        for round_ in range(ATTEST_ROUNDS):
            try:
                return self._attest_once(kek_ids, unwraps, probe)
            except _NoAnswer as exc:
                last = exc
                time.sleep(0.1 * (round_ + 1))
        raise BrokerUnreachableError(
            f"{describe_executor(executor_identity())}: the key broker at {self.address} "
            f"never answered an attestation request ({ATTEST_ROUNDS} tries, each from a "
            f"fresh hello and quote; last: {last})"
        )

    def _attest_once(self, kek_ids: list[str], unwraps: list[dict[str, str]],
                     probe: str) -> None:
        t0 = time.perf_counter()
        timing = Timing()
        conn = self._connect()
        try:
            status, hello = self._post(conn, "/v1/hello", {})
            conn.close()  # hold no broker slot while quoting; the attest reconnects
            if status != 200:
                raise self._refusal(status, hello)
            timing.hello_ms = (time.perf_counter() - t0) * 1e3
            nonce = P.b64d(hello.get("nonce"), "nonce", size=P.NONCE_SIZE)
            broker_key = P.b64d(hello.get("broker_key"), "broker_key", size=P.PUBLIC_KEY_SIZE)
            pinned = os.environ.get(P.ENV_BROKER_ID, "").strip().lower()
            if pinned and pinned != P.key_fingerprint(broker_key):
                raise BrokerUntrustedError(
                    f"the key broker at {self.address} is not the one this application "
                    f"was started with (key {P.key_fingerprint(broker_key)[:16]}...)"
                )
            private = crypto.generate_key()
            worker_key = crypto.public_bytes(private)
            body: dict[str, object] = {
                "nonce": P.b64e(nonce),
                "worker_key": P.b64e(worker_key),
                "keys": kek_ids,
                "unwrap": unwraps,
                "probe": probe,
            }
            t1 = time.perf_counter()
            try:
                attester = self._attester()
                quote = attester.quote(P.worker_report_data(broker_key, nonce, worker_key))
                body["quote"] = P.b64e(quote)
                tee = str(attester.kind)
            # boundary: the attester is a plugin talking to a device; no TEE here: tell the
            # broker why, so it is audited
            except Exception as exc:
                body["no_evidence"] = P.clean_text(f"{type(exc).__name__}: {exc}", 300)
                tee = "none"
            body["identity"] = executor_identity(tee)
            timing.quote_ms = (time.perf_counter() - t1) * 1e3
            t2 = time.perf_counter()
            status, answer = self._post(conn, "/v1/attest", body, resend=False)
            timing.attest_ms = (time.perf_counter() - t2) * 1e3
        finally:
            conn.close()
        if status != 200:
            raise self._refusal(status, answer)

        t3 = time.perf_counter()
        self._verify_driver(broker_key, hello)
        timing.driver_verify_ms = (time.perf_counter() - t3) * 1e3

        sid = P.b64d(answer.get("session"), "session", size=P.SESSION_ID_SIZE)
        shared = crypto.ecdh(private, crypto.load_public_key(broker_key))
        key = P.session_key(shared, nonce, broker_key, worker_key, sid)
        session = _Session(sid, crypto.aead(key), broker_key,
                           P.clean_text(answer.get("executor")) or "this executor")
        self._open_grants(session, answer, kek_ids, unwraps)
        self._session = session
        timing.total_ms = (time.perf_counter() - t0) * 1e3
        self.timing = timing

    def _verify_driver(self, broker_key: bytes, hello: dict[str, Any]) -> None:
        """Check the driver's quote binds ``broker_key`` and passes the driver policy."""
        if broker_key in self._verified_brokers:
            return
        policy = _load_driver_policy(self.driver_policy)
        quote_b64 = hello.get("driver_quote")
        if not quote_b64:
            raise BrokerUntrustedError(
                f"the key broker at {self.address} offered no driver quote; no key is used"
            )
        quote = P.b64d(quote_b64, "driver_quote", max_size=64 * 1024)
        from ppml_kernel.attestation import Verifier
        from ppml_kernel.attestation.collateral import Collateral, CollateralError

        collateral = None
        text = hello.get("driver_collateral")
        if isinstance(text, str) and text:
            try:
                collateral = Collateral.from_json(text, "the driver's collateral")
            except CollateralError:
                collateral = None
        result = Verifier(policy).verify(
            quote, collateral, expected_report_data=P.driver_report_data(broker_key)
        )
        if not result.passed:
            raise BrokerUntrustedError(
                f"{describe_executor(executor_identity())}: the key broker at {self.address} "
                f"is not an attested driver ({result.reason}); no key is used from it"
            )
        self._verified_brokers.add(broker_key)

    def _open_grants(self, session: _Session, answer: dict[str, Any], kek_ids: list[str],
                     unwraps: list[dict[str, str]],
                     wrap_digests: tuple[bytes, ...] | list[bytes] = ()) -> None:
        grants = answer.get("grants") or []
        refused = answer.get("refused") or []
        if not isinstance(grants, list) or not isinstance(refused, list):
            raise BrokerUnreachableError("the key broker's answer has no grant list")
        for grant in grants:
            if not isinstance(grant, dict):
                continue
            kind = grant.get("kind")
            key_id = P.check_key_id(grant.get("key_id"))
            digest = P.b64d(grant.get("digest", ""), "digest", max_size=64)
            nonce = P.b64d(grant.get("nonce"), "nonce", size=12)
            sealed = P.b64d(grant.get("sealed"), "sealed", max_size=4096)
            if kind not in (P.KIND_KEK, P.KIND_UNWRAP, P.KIND_WRAP):
                continue
            try:
                value = session.aead.decrypt(nonce, sealed,
                                             P.grant_aad(session.id, kind, key_id, digest))
            except crypto.InvalidTag:
                raise BrokerUntrustedError(
                    f"a key from the broker at {self.address} does not authenticate; "
                    "no key is used from it"
                ) from None
            if kind == P.KIND_KEK:
                self._keks[key_id] = value
            elif kind == P.KIND_UNWRAP:
                self._data_keys[digest] = value
            elif digest in wrap_digests:
                self._wrapped[digest] = P.unpack_wrapped(value)
        wanted = set(kek_ids) - set(self._keks)
        wanted_digests = {
            P.unwrap_digest(u["key_id"], *(P.b64d(u[f], f) for f in
                                           ("key_check", "nonce", "ciphertext", "context")))
            for u in unwraps
        } - set(self._data_keys)
        wanted_digests |= set(wrap_digests) - set(self._wrapped)
        if wanted or wanted_digests:
            reasons = [P.clean_text(r.get("reason"), 300) for r in refused if isinstance(r, dict)]
            why = "; ".join(reasons) or "the broker granted fewer keys than asked for"
            raise KeyRefusedError(f"{session.executor}: {why}")


_CLIENT: KeyClient | None = None
_CLIENT_PID = 0
_CLIENT_LOCK = threading.Lock()


def client() -> KeyClient:
    """This process's client (a forked child gets a fresh one: keys are per process)."""
    global _CLIENT, _CLIENT_PID
    with _CLIENT_LOCK:
        if _CLIENT is None or os.getpid() != _CLIENT_PID:
            _CLIENT = KeyClient()
            _CLIENT_PID = os.getpid()
        return _CLIENT


def fetch_key(key_id: str) -> bytes:
    """The KEK ``key_id`` from the driver's key broker (the dataset reader's hook)."""
    return client().fetch_key(key_id)


def unwrap_key(key_id: str, wrapped: WrappedKey, context: bytes) -> bytes:
    """A file's data key, opened by the driver (its KEK never leaves it)."""
    return client().unwrap_key(key_id, wrapped, context)


def probe(probe_id: str) -> dict[str, object]:
    """Attest this worker process now and report the outcome (used by the connect sweep)."""
    return client().probe(probe_id)


def wrap_key(key_id: str, data_key: bytes, context: bytes) -> WrappedKey:
    """Seal a writer's new data key under the driver's KEK (which never leaves the driver)."""
    return client().wrap_key(key_id, data_key, context)


class BrokerKeyProvider(KeyProvider):
    """The key provider on attested executors (``keysource=attested``): the driver wraps
    and unwraps; KEKs never leave it, data keys travel sealed to this worker's key."""

    def wrap(self, key_id: str, data_key: bytes, context: bytes) -> WrappedKey:
        return wrap_key(key_id, data_key, context)

    def unwrap(self, key_id: str, wrapped: WrappedKey, context: bytes) -> bytes:
        return unwrap_key(key_id, wrapped, context)

    def describe(self) -> str:
        return f"attested key broker at {os.environ.get(P.ENV_BROKER, '?')}"
