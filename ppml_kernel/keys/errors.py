"""Errors of the keys package: one base, :class:`DatasetKeyError`.

Key errors are raised below the dataset layer but reach users through it, and code
that catches :class:`DatasetError` (the CLI, the magics, user notebooks) must keep
catching them; so the shared :class:`DatasetError` base is defined here, one layer
down, and ``ppml_kernel.data.errors`` re-exports it. Messages name key ids and files,
never key material: they end up in notebooks, Spark logs and tracebacks.
"""

from __future__ import annotations

from ppml_kernel.errors import PPMLError


class DatasetError(PPMLError):
    """Base class: something is wrong with an encrypted dataset or its keys."""


class DatasetKeyError(DatasetError):
    """Base class of every error of the keys package (a key problem)."""


class _AboutKeyId(DatasetKeyError):
    """A key error about one key id, kept as ``key_id`` for callers that add a file name."""

    def __init__(self, message: str, *, key_id: str) -> None:
        super().__init__(message)
        self.key_id = key_id


class UnknownKeyError(_AboutKeyId):
    """No key with this key id is available to the provider."""


class WrongKeyError(_AboutKeyId):
    """A key with this key id exists but it is not the key the file was encrypted with."""


class UnwrapError(_AboutKeyId):
    """The key check matched but the wrapped data key did not authenticate (header edited)."""


class BadDataKeyError(_AboutKeyId):
    """The key provider answered with something that cannot be this file's data key."""


class KeyFileError(DatasetKeyError):
    """A key file is missing, unreadable, malformed or too widely readable."""
