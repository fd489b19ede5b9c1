"""The one rule for a key id, shared by the file format, key files and the cluster broker.

A key id names a key-encryption key. It is stored in every ``ppml-aead/1`` header (95
bytes of ASCII at most, docs/format.md), sent to the cluster's key broker, written in
key files and shown in audit logs and errors. So it is short, ASCII, printable, has no
spaces or quotes, and cannot be mistaken for an option: 1 to 95 characters from
``A-Z a-z 0-9 . _ : @ / + -``, starting with a letter or a digit.

Errors never echo an unbounded value: a rejected id is shown cut to a few characters.
"""

from __future__ import annotations

from ppml_kernel.keys.errors import DatasetKeyError

KEY_ID_MAX = 95
"""At most this many characters (the size of the key-id field in a file header)."""

KEY_ID_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@/+-"
)
_FIRST_CHARS = KEY_ID_CHARS - frozenset("._:@/+-")
_SHOWN = 40


class KeyIdError(DatasetKeyError, ValueError):
    """A value is not a valid key id (the message says why, and shows at most a prefix)."""


def _shown(value: str) -> str:
    text = value if len(value) <= _SHOWN else value[:_SHOWN] + "..."
    return repr(text)


def check_key_id(value: object) -> str:
    """Return ``value`` if it is a valid key id, else raise :class:`KeyIdError`."""
    if not isinstance(value, str):
        raise KeyIdError(f"a key id must be text, got {type(value).__name__}")
    if not 1 <= len(value) <= KEY_ID_MAX:
        raise KeyIdError(
            f"a key id has 1 to {KEY_ID_MAX} characters, got {len(value)}"
            + (f" ({_shown(value)})" if value else "")
        )
    if not set(value) <= KEY_ID_CHARS or value[0] not in _FIRST_CHARS:
        raise KeyIdError(
            f"invalid key id {_shown(value)}: use letters, digits and . _ : @ / + - "
            "(starting with a letter or digit)"
        )
    return value


def is_key_id(value: object) -> bool:
    """True if ``value`` passes :func:`check_key_id`."""
    try:
        check_key_id(value)
    except KeyIdError:
        return False
    return True
