"""Sealed frames as messages: the step both ends of ``ppml-attest/1`` share.

The kernel session and the reference client each keep their own sequence counters
and state checks; turning an inner message into a ``sealed`` message (and a
ciphertext back into plaintext, with a protocol error code) is the same on both
sides, so it lives here once.
"""

from __future__ import annotations

from typing import Any

from ppml_kernel.channel import crypto, protocol
from ppml_kernel.channel.protocol import ProtocolError


def _direction_keys(keys: crypto.SessionKeys, direction: int) -> crypto.DirectionKeys:
    return keys.b2k if direction == crypto.DIR_B2K else keys.k2b


def seal_frame(
    keys: crypto.SessionKeys, direction: int, seq: int, inner: dict[str, Any]
) -> dict[str, Any]:
    """The ``sealed`` message carrying ``inner`` as frame ``seq`` in ``direction``."""
    ct = crypto.seal(
        _direction_keys(keys, direction),
        keys.session_id,
        direction,
        seq,
        protocol.encode_inner(inner),
    )
    return protocol.sealed_message(seq, ct)


def open_frame(keys: crypto.SessionKeys, direction: int, seq: int, ciphertext: bytes) -> bytes:
    """Decrypt frame ``seq``; a failed check is :class:`ProtocolError` code ``decrypt``."""
    try:
        return crypto.open_frame(
            _direction_keys(keys, direction), keys.session_id, direction, seq, ciphertext
        )
    except crypto.ChannelCryptoError as exc:
        raise ProtocolError("decrypt", str(exc)) from None
