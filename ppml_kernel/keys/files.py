"""Key files (``ppml-key/1``): one KEK and its key id in a mode-0600 JSON file.

The data owner's tooling writes them; the kernel imports them into its in-memory
store, and Spark jobs outside the enclave read them through :class:`KeyFileProvider`.
A file others can read is refused, and a parse error never quotes the file (it holds
a key). :func:`parse_kek_text` accepts the same key sent as a browser secret.
"""

from __future__ import annotations

import binascii
import json
import os
import stat
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from ppml_kernel.b64 import b64decode, b64encode
from ppml_kernel.keys.errors import KeyFileError
from ppml_kernel.keys.ids import check_key_id
from ppml_kernel.keys.provider import KekProvider
from ppml_kernel.keys.wrap import KEK_SIZE, key_check_value

KEY_FILE_FORMAT = "ppml-key/1"
_MAX_FILE = 65536


def generate_kek() -> bytes:
    """A fresh random 256-bit KEK."""
    return os.urandom(KEK_SIZE)


def write_key_file(path: str | os.PathLike[str], key_id: str, kek: bytes | None = None,
                   *, overwrite: bool = False) -> Path:
    """Create a mode-0600 key file; refuses to replace an existing file unless asked."""
    check_key_id(key_id)
    kek = generate_kek() if kek is None else kek
    if len(kek) != KEK_SIZE:
        raise ValueError("a KEK is 32 bytes")
    doc = {
        "format": KEY_FILE_FORMAT,
        "key_id": key_id,
        "key": b64encode(kek),
        "key_check": key_check_value(kek).hex(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    target = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(target, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        raise KeyFileError(f"{target} already exists; not overwriting a key file") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (json.dumps(doc, indent=2) + "\n").encode("ascii"))
    finally:
        os.close(fd)
    return target


def read_key_file(path: str | os.PathLike[str], *, check_mode: bool = True) -> tuple[str, bytes]:
    """Return ``(key_id, kek)`` from a key file, refusing files others can read."""
    target = Path(path)
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise KeyFileError(f"key file {target} does not exist") from None
    except PermissionError:
        raise KeyFileError(f"key file {target} is not readable") from None
    try:
        st = os.fstat(fd)
        if check_mode and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"key file {target} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {target}"
            )
        if check_mode and hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise KeyFileError(f"key file {target} is owned by another user")
        raw = b""
        while chunk := os.read(fd, 65536):
            raw += chunk
            if len(raw) > _MAX_FILE:
                raise KeyFileError(f"key file {target} is too large to be a key file")
    finally:
        os.close(fd)
    try:
        doc = json.loads(raw)
        if doc.get("format") != KEY_FILE_FORMAT:
            raise ValueError
        key_id = check_key_id(doc["key_id"])
        kek = b64decode(doc["key"])
    # not JSON or not UTF-8 (ValueError), not an object (AttributeError), a field missing
    # or of the wrong type (KeyError, TypeError), a bad key id or base64 (ValueError).
    # Never chain the parse error: it could quote the file's contents.
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KeyFileError(
            f"{target} is not a {KEY_FILE_FORMAT} key file (JSON with key_id and key)"
        ) from None
    if len(kek) != KEK_SIZE:
        raise KeyFileError(f"key file {target}: the key is not 32 bytes")
    return key_id, kek


def parse_kek_text(text: str) -> bytes | None:
    """32 key bytes from a secret's text: a ppml-key/1 key file, base64 or hex; else None."""
    t = text.strip()
    try:
        if t.startswith("{"):
            doc = json.loads(t)
            if doc.get("format") != KEY_FILE_FORMAT:
                return None
            t = str(doc.get("key", ""))
        raw = bytes.fromhex(t) if len(t) == 2 * KEK_SIZE else b64decode(t)
    except (ValueError, binascii.Error, AttributeError):
        return None
    return raw if len(raw) == KEK_SIZE else None


class KeyFileProvider(KekProvider):
    """KEKs read from one or more key files (data owner's CLI, tests)."""

    def __init__(self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                 *, check_mode: bool = True) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self._keys: dict[str, bytes] = {}
        self.paths = [Path(p) for p in paths]
        for p in self.paths:
            key_id, kek = read_key_file(p, check_mode=check_mode)
            if key_id in self._keys and self._keys[key_id] != kek:
                raise KeyFileError(f"two different keys for key id {key_id!r} (in {p})")
            self._keys[key_id] = kek

    def kek(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)

    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def describe(self) -> str:
        return "key file " + ", ".join(str(p) for p in self.paths)
