"""Sealed frames as messages: the step both ends of ``ppml-attest/2`` share.

The kernel session and the reference client each keep their own sequence counters
and state checks; turning an inner message into a ``sealed`` message (and a
ciphertext back into plaintext, with a protocol error code) is the same on both
sides, so it lives here once.
"""

from __future__ import annotations

from typing import Any

from ppml_kernel.channel import crypto, protocol
from ppml_kernel.channel.protocol import ProtocolError


def seal_frame(
    keys: crypto.SessionKeys, direction: int, seq: int, inner: dict[str, Any]
) -> dict[str, Any]:
    """The ``sealed`` message carrying ``inner`` as frame ``seq`` in ``direction``."""
    ct = crypto.seal(
        keys.streams[direction],
        keys.session_id,
        direction,
        seq,
        protocol.encode_inner(inner),
    )
    return protocol.sealed_message(seq, ct)


def open_frame(keys: crypto.SessionKeys, direction: int, seq: int, ciphertext: bytes) -> bytes:
    """Decrypt frame ``seq``; a failed check is :class:`ProtocolError` code ``decrypt``."""
    return open_raw(keys, direction, seq, ciphertext)


def open_raw(keys: crypto.SessionKeys, stream: int, seq: int, ciphertext: bytes) -> bytes:
    """Decrypt ``ciphertext`` as frame ``seq`` of ``stream`` (any stream)."""
    try:
        return crypto.open_frame(keys.streams[stream], keys.session_id, stream, seq, ciphertext)
    except crypto.ChannelCryptoError as exc:
        raise ProtocolError("decrypt", str(exc)) from None
