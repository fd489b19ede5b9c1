"""Base64 for protocol fields, once: standard alphabet, padded, decoded strictly.

The browser channel, the key brokers and key files all carry bytes as base64 text in
JSON. Decoding is strict (no stray characters) and bounded, and an error names the
field but never echoes its content (it may be key material). Standard library only,
so modules that must not load ``cryptography`` at import can use it.
"""

from __future__ import annotations

import base64
import binascii


class Base64Error(ValueError):
    """A base64 field is missing, too long, malformed or of the wrong size."""


def b64encode(data: bytes) -> str:
    """Standard base64 with padding (``btoa`` compatible)."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Decode strictly (``ValueError`` on any character outside the alphabet)."""
    return base64.b64decode(text, validate=True)


def decode_field(value: object, field: str, *, size: int | None = None,
                 limit: int = 1 << 20) -> bytes:
    """Decode a message field of at most ``limit`` characters (and exactly ``size`` bytes)."""
    if not isinstance(value, str):
        raise Base64Error(f"field {field!r} must be a base64 string")
    if len(value) > limit:
        raise Base64Error(f"field {field!r} is too large ({len(value)} characters)")
    try:
        raw = b64decode(value)
    except (binascii.Error, ValueError):
        raise Base64Error(f"field {field!r} is not valid base64") from None
    if size is not None and len(raw) != size:
        raise Base64Error(f"field {field!r} must be {size} bytes, got {len(raw)}")
    return raw
