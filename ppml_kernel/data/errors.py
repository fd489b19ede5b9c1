"""Errors for encrypted datasets.

Every message names the file (and the chunk or key id where that matters) so a user
can act on it, and none ever contains key material or plaintext: these messages end
up in notebooks, Spark logs and tracebacks, which leave the enclave.
"""

from __future__ import annotations

from ppml_kernel.errors import PPMLError


class DatasetError(PPMLError):
    """Base class: something is wrong with an encrypted dataset or its keys."""


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


class DatasetKeyError(DatasetError):
    """Base class for key problems."""


class UnknownKeyError(DatasetKeyError):
    """No key with this key id is available to the provider."""

    def __init__(self, message: str, *, key_id: str) -> None:
        super().__init__(message)
        self.key_id = key_id


class WrongKeyError(DatasetKeyError):
    """A key with this key id exists but it is not the key the file was encrypted with."""

    def __init__(self, message: str, *, key_id: str) -> None:
        super().__init__(message)
        self.key_id = key_id


class UnwrapError(DatasetKeyError):
    """The key check matched but the wrapped data key did not authenticate (header edited)."""

    def __init__(self, message: str, *, key_id: str) -> None:
        super().__init__(message)
        self.key_id = key_id


class BadDataKeyError(DatasetKeyError):
    """The key provider answered with something that cannot be this file's data key."""

    def __init__(self, message: str, *, key_id: str) -> None:
        super().__init__(message)
        self.key_id = key_id


class KeyFileError(DatasetKeyError):
    """A key file is missing, unreadable, malformed or too widely readable."""
