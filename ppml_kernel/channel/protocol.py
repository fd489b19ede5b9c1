"""Message schemas of ``ppml-attest/2`` (see ``docs/protocol.md``) and their validation.

Every message is a JSON object with a ``type``. Outer messages travel as comm data;
inner messages travel inside sealed frames. Validation here is strict and names the
offending field, because the relay (Jupyter server, proxy) is untrusted and malformed
input must produce a clear error, never a traceback or a half-updated session.

Only the standard library is imported here (the sizes and names live here, not in
``crypto``), so the kernel can register its comm target at start without loading
``cryptography``; see ``channel.jupyter``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ppml_kernel import b64 as _b64
from ppml_kernel.channel.errors import AttestedChannelError

PROTOCOL = "ppml-attest/2"
TARGET_NAME = "ppml.attest/2"
NONCE_SIZE = 32
PUBLIC_KEY_SIZE = 65  # SEC1 uncompressed P-256 point: 0x04 || x || y

# Outer messages (comm data)
HELLO = "hello"  # browser -> kernel, comm_open data
EVIDENCE = "evidence"  # kernel -> browser
SEALED = "sealed"  # both directions
ABORT = "abort"  # browser -> kernel: verification failed, reason (informative)
ERROR = "error"  # kernel -> browser: a frame was rejected

# Inner messages (inside sealed frames)
FINISHED = "finished"  # browser -> kernel, seq 0: the browser verified and accepted
READY = "ready"  # kernel -> browser, seq 0: key confirmation
SECRET_REQUEST = "secret_request"  # kernel -> browser
SECRET = "secret"  # browser -> kernel
SECRET_DECLINE = "secret_decline"  # browser -> kernel: the user cancelled
SECRET_RESULT = "secret_result"  # kernel -> browser: stored (or why not)
SECRET_CANCEL = "secret_cancel"  # kernel -> browser: request no longer pending
MODE = "mode"  # kernel -> browser: sealed mode changed
OWNER_GRANT = "owner_grant"  # browser -> kernel: an owner adds another owner key
OWNER_RESULT = "owner_result"  # kernel -> browser: the grant's outcome

B2K_INNER = frozenset({FINISHED, SECRET, SECRET_DECLINE, OWNER_GRANT})
K2B_INNER = frozenset({READY, MODE, SECRET_REQUEST, SECRET_RESULT, SECRET_CANCEL, OWNER_RESULT})
SIGNATURE_SIZE = 64  # ECDSA P-256 r || s
MAX_OWNERS = 16
LABEL_RE = re.compile(r"^[\x20-\x7e]{1,64}$")

# Sealed notebook messages (docs/protocol.md, 6): the envelope key, and what stays clear.
SEALED_KEY = "ppml_sealed"
CLEAR_REQUESTS = frozenset({"kernel_info_request", "shutdown_request", "interrupt_request"})
CLEAR_FROM_KERNEL = frozenset({"status", "kernel_info_reply", "shutdown_reply", "interrupt_reply"})

MAX_FRAME_B64 = 1 << 20  # 1 MiB of base64 is far more than any secret
MAX_SECRET_BYTES = 64 * 1024
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


class ProtocolError(AttestedChannelError, ValueError):
    """A message does not follow ``ppml-attest/2``. ``code`` goes to the browser."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


b64encode = _b64.b64encode


def b64decode(
    value: object, field: str, size: int | None = None, limit: int = MAX_FRAME_B64
) -> bytes:
    """Decode a base64 field strictly, naming ``field`` on failure."""
    try:
        return _b64.decode_field(value, field, size=size, limit=limit)
    except _b64.Base64Error as exc:
        raise ProtocolError("malformed", str(exc)) from None


def require_type(msg: object, expected: str | frozenset[str] | None = None) -> str:
    """Return the message's ``type``, checking it is an object with an expected type."""
    if not isinstance(msg, dict):
        raise ProtocolError("malformed", "message must be a JSON object")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("malformed", "message has no 'type' string")
    if isinstance(expected, str) and kind != expected:
        raise ProtocolError("unexpected", f"expected a {expected!r} message, got {kind!r}")
    if isinstance(expected, frozenset) and kind not in expected:
        raise ProtocolError("unexpected", f"message type {kind!r} is not allowed here")
    return kind


def parse_hello(msg: object) -> tuple[bytes, bytes, bytes]:
    """Validate a ``hello``; return (nonce, browser_pub, owner_pub)."""
    require_type(msg, HELLO)
    assert isinstance(msg, dict)
    if msg.get("protocol") != PROTOCOL:
        raise ProtocolError(
            "unsupported", f"protocol {msg.get('protocol')!r} is not supported (need {PROTOCOL})"
        )
    nonce = b64decode(msg.get("nonce"), "nonce", NONCE_SIZE)
    browser_pub = b64decode(msg.get("browser_pub"), "browser_pub", PUBLIC_KEY_SIZE)
    owner_pub = b64decode(msg.get("owner_pub"), "owner_pub", PUBLIC_KEY_SIZE)
    return nonce, browser_pub, owner_pub


def evidence_message(
    enclave_pub: bytes,
    owners: list[bytes],
    quote: bytes,
    collateral: str | None,
    tee: dict[str, Any],
    kernel: dict[str, Any],
    timings: dict[str, float],
) -> dict[str, Any]:
    """The kernel's answer to ``hello``."""
    return {
        "type": EVIDENCE,
        "protocol": PROTOCOL,
        "enclave_pub": b64encode(enclave_pub),
        "owners": [b64encode(o) for o in owners],
        "quote": b64encode(quote),
        "collateral": collateral,
        "tee": tee,
        "kernel": kernel,
        "timings": timings,
    }


def parse_sealed(msg: object) -> tuple[int, bytes]:
    """Validate a ``sealed`` frame; return (seq, ciphertext)."""
    require_type(msg, SEALED)
    assert isinstance(msg, dict)
    seq = msg.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ProtocolError("malformed", "field 'seq' must be a non-negative integer")
    return seq, b64decode(msg.get("ct"), "ct")


def sealed_message(seq: int, ciphertext: bytes) -> dict[str, Any]:
    return {"type": SEALED, "seq": seq, "ct": b64encode(ciphertext)}


def error_message(code: str, message: str, seq: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": ERROR, "code": code, "message": message}
    if seq is not None:
        out["seq"] = seq
    return out


def decode_inner(plaintext: bytes, allowed: frozenset[str]) -> dict[str, Any]:
    """Parse a decrypted frame. Error messages never quote the plaintext (it may be secret)."""
    try:
        msg = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError("malformed", "sealed frame does not contain a JSON object") from None
    require_type(msg, allowed)
    return msg


def encode_inner(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def check_name(name: object, field: str = "name") -> str:
    """Secret names are identifiers (they appear in listings, never their values)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ProtocolError(
            "malformed",
            f"field {field!r} must be a name of letters, digits, '_', '.', '-' "
            "(starting with a letter or '_', at most 64 characters)",
        )
    return name


def check_request_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not REQUEST_ID_RE.fullmatch(value):
        raise ProtocolError("malformed", "field 'request_id' must be null or a short identifier")
    return value


def parse_secret(msg: dict[str, Any]) -> tuple[str | None, str, str, bool]:
    """Validate an inner ``secret``; return (request_id, name, value, replace)."""
    request_id = check_request_id(msg.get("request_id"))
    name = check_name(msg.get("name"))
    value = msg.get("value")
    if not isinstance(value, str):
        raise ProtocolError("malformed", "field 'value' must be a string")
    if len(value.encode("utf-8")) > MAX_SECRET_BYTES:
        raise ProtocolError("malformed", f"secret {name!r} is larger than {MAX_SECRET_BYTES} bytes")
    replace = msg.get("replace", False)
    if not isinstance(replace, bool):
        raise ProtocolError("malformed", "field 'replace' must be true or false")
    return request_id, name, value, replace


def parse_finished(msg: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """Validate an inner ``finished``; return (verdict for display, owner signature)."""
    verdict = msg.get("verdict")
    if verdict is not None and not isinstance(verdict, dict):
        raise ProtocolError("malformed", "field 'verdict' must be an object")
    sig = b64decode(msg.get("owner_sig"), "owner_sig", SIGNATURE_SIZE)
    return dict(verdict or {}), sig


def parse_owner_grant(msg: dict[str, Any]) -> tuple[bytes, str, bytes]:
    """Validate an inner ``owner_grant``; return (new owner key, label, signature)."""
    owner_pub = b64decode(msg.get("owner_pub"), "owner_pub", PUBLIC_KEY_SIZE)
    label = msg.get("label")
    if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
        raise ProtocolError("malformed", "field 'label' must be 1-64 printable ASCII characters")
    sig = b64decode(msg.get("sig"), "sig", SIGNATURE_SIZE)
    return owner_pub, label, sig


def parse_secret_decline(msg: dict[str, Any]) -> tuple[str | None, str]:
    """Validate an inner ``secret_decline``; return (request_id, reason)."""
    request_id = check_request_id(msg.get("request_id"))
    reason = msg.get("reason", "")
    if not isinstance(reason, str):
        raise ProtocolError("malformed", "field 'reason' must be a string")
    return request_id, reason[:200] or "cancelled in the browser"


def validate_inner(msg: dict[str, Any]) -> None:
    """Check an inner browser message's fields completely, before it changes any state."""
    kind = msg["type"]
    if kind == SECRET:
        parse_secret(msg)
    elif kind == FINISHED:
        parse_finished(msg)
    elif kind == OWNER_GRANT:
        parse_owner_grant(msg)
    elif kind == SECRET_DECLINE:
        parse_secret_decline(msg)
