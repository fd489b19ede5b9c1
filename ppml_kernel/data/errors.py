"""Errors for encrypted datasets.

Every message names the file (and the chunk or key id where that matters) so a user
can act on it, and none ever contains key material or plaintext: these messages end
up in notebooks, Spark logs and tracebacks, which leave the enclave.
"""

from __future__ import annotations

# Key errors, and the base they share with dataset errors, live in ppml_kernel.keys.errors.
from ppml_kernel.keys.errors import (
    BadDataKeyError,
    DatasetError,
    DatasetKeyError,
    KeyFileError,
    UnknownKeyError,
    UnwrapError,
    WrongKeyError,
)

__all__ = [
    "BadDataKeyError",
    "CorruptFileError",
    "DatasetError",
    "DatasetKeyError",
    "ExtendedFileError",
    "HeaderTamperedError",
    "KeyFileError",
    "NotEncryptedError",
    "TamperedChunkError",
    "TruncatedFileError",
    "UnknownKeyError",
    "UnsupportedVersionError",
    "UnwrapError",
    "WrongKeyError",
]


class NotEncryptedError(DatasetError):
    """The file is not a ``ppml-aead/1`` file; the message says what it looks like."""


class UnsupportedVersionError(DatasetError):
    """A ppml-aead file of a version or algorithm this code does not implement."""


class CorruptFileError(DatasetError):
    """The file fails authentication or does not fit the chunk layout."""


class TamperedChunkError(CorruptFileError):
    """One chunk failed authentication: bit flip, reordering or a chunk from another file."""

    def __init__(self, message: str, *, source: str, chunk: int) -> None:
        super().__init__(message)
        self.source = source
        self.chunk = chunk


class TruncatedFileError(CorruptFileError):
    """The file ends before its final chunk."""


class ExtendedFileError(CorruptFileError):
    """The file has data after its final chunk."""


class HeaderTamperedError(CorruptFileError):
    """The right key, but the header's data-key slot or fixed fields were changed."""
