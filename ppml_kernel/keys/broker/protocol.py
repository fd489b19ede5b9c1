"""The key-broker protocol, shared by the driver's broker and the executors' client.

Pull, not push (BRIEF §6). An executor-side Python worker that needs a key:

1. ``POST /v1/hello`` -> a fresh single-use ``nonce``, the broker's session public key
   ``broker_key`` (P-256, generated when the broker started) and the driver's evidence:
   a quote whose REPORT_DATA binds ``broker_key`` (:func:`driver_report_data`).
2. It makes an ephemeral P-256 key and a quote with REPORT_DATA =
   :func:`worker_report_data` (domain, broker key, nonce, worker key), then
   ``POST /v1/attest`` with the quote, its public key and the key ids it wants.
3. The broker verifies the quote with dcap-qvl against the cluster policy, opens a
   session bound to that worker key and returns each key sealed with AES-256-GCM
   under :func:`session_key` (ECDH broker key x worker key, HKDF-SHA256). Later
   requests in the same process use ``POST /v1/keys`` with the session id.
4. Before using a key, the worker verifies the driver's quote: only the attested
   driver holds the broker's private key, so a key that decrypts came from it.

Everything is JSON with base64 binary fields; messages are small and bounded.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ppml_kernel import b64 as _b64
from ppml_kernel import crypto
from ppml_kernel.keys import ids as _ids
from ppml_kernel.keys import registry
from ppml_kernel.keys.errors import DatasetKeyError
from ppml_kernel.keys.wrap import WrappedKey

VERSION = 1
WORKER_DOMAIN = b"ppml-kernel key-broker/1 worker\x00"
DRIVER_DOMAIN = b"ppml-kernel key-broker/1 driver\x00"
WRAP_INFO = b"ppml-kernel key-broker/1 wrap\x00"
GRANT_AAD = b"ppml-kernel key-broker/1 grant\x00"

NONCE_SIZE = 32
SESSION_ID_SIZE = 16
PUBLIC_KEY_SIZE = 65  # uncompressed SEC1 P-256 point
MAX_REQUEST_BYTES = 256 * 1024
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_KEYS_PER_REQUEST = 256
MAX_FIELD_CHARS = 128

KIND_KEK = "kek"  # a KEK by id (``fetch_key``)
KIND_UNWRAP = "unwrap"  # a file's data key, opened by the driver's KEK
KIND_WRAP = "wrap"  # a new data key, sealed by the driver's KEK (for writers)
KIND_WRAP_REQUEST = "wrap-request"  # the worker's data key on its way to the broker

ENV_BROKER = "PPML_CLUSTER_BROKER"  # host:port of the driver's broker
ENV_BROKER_ID = "PPML_CLUSTER_BROKER_ID"  # SHA-256 of the broker key (a hint, checked too)
ENV_DRIVER_POLICY = "PPML_DRIVER_POLICY"  # JSON policy (or a file path) for the driver
ENV_KEYSOURCE = registry.ENV_VAR  # the key-source selector on executors
KEYSOURCE_NAME = "attested"  # ... and the name this broker's client is registered under


class ProtocolError(DatasetKeyError, ValueError):
    """A message does not follow the protocol (the text says which field)."""


b64e = _b64.b64encode


def b64d(value: object, field: str, *, size: int | None = None, max_size: int = 65536) -> bytes:
    """Decode a base64 field of at most ``max_size`` bytes; errors name the field only."""
    try:
        return _b64.decode_field(value, field, size=size, limit=max_size * 4 // 3 + 4)
    except _b64.Base64Error as exc:
        raise ProtocolError(str(exc)) from None


def key_fingerprint(public_key: bytes) -> str:
    """SHA-256 hex of an uncompressed public key (what executors pin)."""
    return hashlib.sha256(public_key).hexdigest()


def worker_report_data(broker_key: bytes, nonce: bytes, worker_key: bytes) -> bytes:
    """REPORT_DATA a worker's quote must carry: SHA-512 over fixed-size fields."""
    if len(broker_key) != PUBLIC_KEY_SIZE or len(worker_key) != PUBLIC_KEY_SIZE:
        raise ProtocolError("public keys must be 65-byte uncompressed P-256 points")
    if len(nonce) != NONCE_SIZE:
        raise ProtocolError(f"nonce must be {NONCE_SIZE} bytes")
    return hashlib.sha512(WORKER_DOMAIN + broker_key + nonce + worker_key).digest()


def driver_report_data(broker_key: bytes) -> bytes:
    """REPORT_DATA of the driver's quote: binds the broker's session public key."""
    if len(broker_key) != PUBLIC_KEY_SIZE:
        raise ProtocolError("the broker key must be a 65-byte uncompressed P-256 point")
    return hashlib.sha512(DRIVER_DOMAIN + broker_key).digest()


def session_key(shared_secret: bytes, nonce: bytes, broker_key: bytes, worker_key: bytes,
                session_id: bytes) -> bytes:
    """The AES-256 key that seals grants for one session (HKDF-SHA256 over the transcript)."""
    info = WRAP_INFO + broker_key + worker_key + session_id
    return crypto.hkdf_sha256(shared_secret, nonce, info, 32)


def load_public_key(raw: bytes) -> crypto.PublicKey:
    """A worker's P-256 public key; :class:`ProtocolError` if it is not a point."""
    try:
        return crypto.load_public_key(raw)
    except ValueError:
        raise ProtocolError("field 'worker_key' is not a P-256 point") from None


_lp = crypto.lp


def grant_aad(session_id: bytes, kind: str, key_id: str, request_digest: bytes = b"") -> bytes:
    """AAD of one sealed key: the session, what kind of grant, which key, which request."""
    return (
        GRANT_AAD
        + _lp(session_id)
        + _lp(kind.encode("ascii"))
        + _lp(key_id.encode("utf-8"))
        + _lp(request_digest)
    )


def unwrap_digest(key_id: str, key_check: bytes, nonce: bytes, ciphertext: bytes,
                  context: bytes) -> bytes:
    """Names one unwrap request, so a sealed data key answers exactly that request."""
    h = hashlib.sha256(b"ppml-kernel key-broker/1 unwrap\x00")
    for part in (key_id.encode("utf-8"), key_check, nonce, ciphertext, context):
        h.update(_lp(part))
    return h.digest()


def wrap_digest(key_id: str, nonce: bytes, sealed: bytes, context: bytes) -> bytes:
    """Names one wrap request, so the wrapped key answers exactly that request."""
    h = hashlib.sha256(b"ppml-kernel key-broker/1 wrap\x00")
    for part in (key_id.encode("utf-8"), nonce, sealed, context):
        h.update(_lp(part))
    return h.digest()


def wrap_request_aad(session_id: bytes, key_id: str, context: bytes) -> bytes:
    """AAD of a worker's data key sealed to the broker for wrapping."""
    return grant_aad(session_id, KIND_WRAP_REQUEST, key_id, hashlib.sha256(context).digest())


def pack_wrapped(key_check: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    return _lp(key_check) + _lp(nonce) + _lp(ciphertext)


def unpack_wrapped(data: bytes) -> WrappedKey:
    parts, offset = [], 0
    for _ in range(3):
        if offset + 4 > len(data):
            raise ProtocolError("a wrapped key is truncated")
        size = int.from_bytes(data[offset:offset + 4], "big")
        offset += 4
        if offset + size > len(data):
            raise ProtocolError("a wrapped key is truncated")
        parts.append(data[offset:offset + size])
        offset += size
    if offset != len(data):
        raise ProtocolError("a wrapped key has trailing bytes")
    return WrappedKey(*parts)


def check_key_id(value: object, field: str = "key_id") -> str:
    """A key id by the one rule of :mod:`ppml_kernel.keys.ids`; errors name the field."""
    try:
        return _ids.check_key_id(value)
    except _ids.KeyIdError as exc:
        raise ProtocolError(f"field {field!r}: {exc}") from None


def clean_text(value: object, limit: int = MAX_FIELD_CHARS) -> str:
    """An untrusted label made safe to log and show: printable, bounded, never an error."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text[:limit]


def parse_key_requests(body: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """KEK ids and unwrap requests of a request body, checked and bounded."""
    keys = body.get("keys") or []
    unwraps = body.get("unwrap") or []
    if not isinstance(keys, list) or not isinstance(unwraps, list):
        raise ProtocolError("'keys' and 'unwrap' must be lists")
    if len(keys) + len(unwraps) > MAX_KEYS_PER_REQUEST:
        raise ProtocolError(f"at most {MAX_KEYS_PER_REQUEST} keys per request")
    kek_ids = list(dict.fromkeys(check_key_id(k, f"keys[{i}]") for i, k in enumerate(keys)))
    parsed = []
    for i, item in enumerate(unwraps):
        if not isinstance(item, dict):
            raise ProtocolError(f"unwrap[{i}] must be an object")
        key_id = check_key_id(item.get("key_id"), f"unwrap[{i}].key_id")
        wrapped = WrappedKey(
            b64d(item.get("key_check"), f"unwrap[{i}].key_check", max_size=64),
            b64d(item.get("nonce"), f"unwrap[{i}].nonce", max_size=64),
            b64d(item.get("ciphertext"), f"unwrap[{i}].ciphertext", max_size=1024),
        )
        context = b64d(item.get("context", ""), f"unwrap[{i}].context", max_size=4096)
        digest = unwrap_digest(key_id, wrapped.key_check, wrapped.nonce,
                                 wrapped.ciphertext, context)
        parsed.append({"key_id": key_id, "wrapped": wrapped, "context": context,
                       "digest": digest})
    return kek_ids, parsed


def parse_wrap_requests(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Wrap requests of a ``/v1/keys`` body, checked and bounded."""
    items = body.get("wrap") or []
    if not isinstance(items, list) or len(items) > MAX_KEYS_PER_REQUEST:
        raise ProtocolError(f"'wrap' must be a list of at most {MAX_KEYS_PER_REQUEST}")
    parsed = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ProtocolError(f"wrap[{i}] must be an object")
        key_id = check_key_id(item.get("key_id"), f"wrap[{i}].key_id")
        nonce = b64d(item.get("nonce"), f"wrap[{i}].nonce", size=12)
        sealed = b64d(item.get("sealed"), f"wrap[{i}].sealed", max_size=1024)
        context = b64d(item.get("context", ""), f"wrap[{i}].context", max_size=4096)
        parsed.append({"key_id": key_id, "nonce": nonce, "sealed": sealed, "context": context,
                       "digest": wrap_digest(key_id, nonce, sealed, context)})
    return parsed
