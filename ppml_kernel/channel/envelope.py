"""Sealed Jupyter messages: the notebook conversation inside a ``ppml-attest/2`` session.

A sealed message keeps its header, parent header and channel in the clear (the relay
routes by them) and replaces ``content``, ``metadata`` and ``buffers`` with an envelope
``{"ppml_sealed": {"v": 2, "sid": ..., "seq": ...}}`` plus one binary buffer holding
the AES-GCM ciphertext of ``lp(JSON) || lp(buffer_0) || ...`` (docs/protocol.md, 6).
The JSON repeats the message's ids and type, and the receiver checks them, so sealed
content cannot be moved onto another message. Binary buffers keep a 10 MB output from
growing by base64.

Pure functions over bytes and dicts; the session (``channel.session``) owns the keys
and sequence numbers, the kernel gate and the Python client own the transport.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from jupyter_client.jsonutil import json_default

from ppml_kernel.channel import crypto
from ppml_kernel.channel.protocol import CLEAR_FROM_KERNEL as CLEAR_FROM_KERNEL
from ppml_kernel.channel.protocol import CLEAR_REQUESTS as CLEAR_REQUESTS
from ppml_kernel.channel.protocol import SEALED_KEY, ProtocolError

VERSION = 2

_BROWSER_STREAMS = {"shell": crypto.DIR_B2K_SHELL, "stdin": crypto.DIR_B2K_STDIN}
_KERNEL_STREAMS = {
    "shell": crypto.DIR_K2B_SHELL,
    "iopub": crypto.DIR_K2B_IOPUB,
    "stdin": crypto.DIR_K2B_STDIN,
}


@dataclass(frozen=True)
class Envelope:
    """The clear part of a sealed message: which session and which frame."""

    sid: str
    seq: int


@dataclass
class Body:
    """The sealed part of a message, once opened."""

    content: dict[str, Any]
    metadata: dict[str, Any]
    buffers: list[bytes]


def browser_stream(channel: str) -> int:
    """The stream a browser -> kernel message on ``channel`` is sealed on."""
    try:
        return _BROWSER_STREAMS[channel]
    except KeyError:
        raise ProtocolError("malformed", f"no sealed messages on the {channel} channel") from None


def kernel_stream(channel: str) -> int:
    try:
        return _KERNEL_STREAMS[channel]
    except KeyError:
        raise ProtocolError("malformed", f"no sealed messages on the {channel} channel") from None


def kernel_channel(msg_type: str) -> str:
    """The channel a kernel message of ``msg_type`` travels on (replies, input, the rest)."""
    if msg_type.endswith("_reply"):
        return "shell"
    if msg_type == "input_request":
        return "stdin"
    return "iopub"


def envelope_of(content: object) -> Envelope | None:
    """The envelope in a message's content; None if the message is not sealed.

    A content that claims to be sealed but is malformed raises ``ProtocolError``.
    """
    if not isinstance(content, dict) or SEALED_KEY not in content:
        return None
    env = content[SEALED_KEY]
    if not isinstance(env, dict) or env.get("v") != VERSION:
        raise ProtocolError("unsupported", f"sealed envelope must be version {VERSION}")
    sid, seq = env.get("sid"), env.get("seq")
    if not isinstance(sid, str) or len(sid) != 2 * crypto.SESSION_ID_SIZE:
        raise ProtocolError("malformed", "sealed envelope has no valid 'sid'")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= crypto.MAX_SEQ:
        raise ProtocolError("malformed", "sealed envelope has no valid 'seq'")
    return Envelope(sid, seq)


def envelope_content(sid: str, seq: int) -> dict[str, Any]:
    return {SEALED_KEY: {"v": VERSION, "sid": sid, "seq": seq}}


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def pack(header: dict[str, Any], body: Body) -> bytes:
    """Plaintext of a sealed message: lp(JSON of ids + content + metadata) || lp(buffers)."""
    doc = {**header, "content": body.content, "metadata": body.metadata}
    text = json.dumps(doc, default=json_default, ensure_ascii=False, separators=(",", ":"))
    parts = [_lp(text.encode("utf-8"))]
    parts.extend(_lp(bytes(b)) for b in body.buffers)
    return b"".join(parts)


def unpack(plaintext: bytes, expect: dict[str, Any]) -> Body:
    """Parse a plaintext and check its ids against the clear header (``expect``)."""
    view = memoryview(plaintext)
    chunks: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise ProtocolError("malformed", "sealed message is truncated")
        (size,) = struct.unpack_from(">I", view, offset)
        offset += 4
        if offset + size > len(view):
            raise ProtocolError("malformed", "sealed message is truncated")
        chunks.append(bytes(view[offset : offset + size]))
        offset += size
    if not chunks:
        raise ProtocolError("malformed", "sealed message is empty")
    try:
        doc = json.loads(chunks[0].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError("malformed", "sealed message does not hold a JSON object") from None
    if not isinstance(doc, dict):
        raise ProtocolError("malformed", "sealed message does not hold a JSON object")
    for key, value in expect.items():
        if doc.get(key) != value:
            raise ProtocolError(
                "binding", f"sealed body belongs to another message ({key} does not match)"
            )
    content, metadata = doc.get("content"), doc.get("metadata", {})
    if not isinstance(content, dict) or not isinstance(metadata, dict):
        raise ProtocolError("malformed", "sealed body needs 'content' and 'metadata' objects")
    return Body(content, metadata, chunks[1:])


def request_ids(header: dict[str, Any]) -> dict[str, Any]:
    """What a browser -> kernel body must repeat from its clear header."""
    return {"msg_id": header.get("msg_id"), "msg_type": header.get("msg_type")}


def reply_ids(header: dict[str, Any], parent: dict[str, Any]) -> dict[str, Any]:
    """What a kernel -> browser body must repeat from its clear headers."""
    return {
        "msg_id": header.get("msg_id"),
        "msg_type": header.get("msg_type"),
        "parent_msg_id": (parent or {}).get("msg_id"),
    }
