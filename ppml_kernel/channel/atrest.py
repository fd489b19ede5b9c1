"""Sealed notebooks at rest: outputs (and optionally sources) encrypted in the ``.ipynb``.

The file a notebook server stores is as untrusted as the server. A cell's outputs are
replaced by one placeholder output that carries the AES-256-GCM ciphertext of the
original list, under a key only the user holds (the browser keeps its own in IndexedDB;
``ppml-kernel run --outputs sealed`` uses a key file). Anyone else sees the
placeholder text. The format is docs/protocol.md, section 7; the extension writes and
reads the same one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ppml_kernel.channel.crypto import lp
from ppml_kernel.channel.errors import AttestedChannelError
from ppml_kernel.channel.protocol import b64decode, b64encode

MIME = "application/vnd.ppml.sealed-output+json"
SOURCE_KEY = "ppml_sealed_source"
LABEL_OUTPUTS = b"ppml-notebook/1 outputs"
LABEL_SOURCE = b"ppml-notebook/1 source"
KEY_BYTES = 32
PLACEHOLDER = (
    "[sealed output: encrypted for the browser (or key file) that ran this notebook; "
    "open it there to see it]"
)
SOURCE_PLACEHOLDER = "# [sealed cell source: readable only where this notebook was run]"


class SealedNotebookError(AttestedChannelError, ValueError):
    """A sealed cell could not be opened (wrong key, or the file was modified)."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def load_or_create_key(path: Path) -> bytes:
    """A 32-byte notebook key from ``path``, created (mode 0600) if it does not exist."""
    if path.exists():
        raw = path.read_bytes()
        if len(raw) != KEY_BYTES:
            raise SealedNotebookError(f"{path} is not a {KEY_BYTES}-byte notebook key")
        return raw
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def _seal(key: bytes, label: bytes, cell_id: str, value: Any) -> dict[str, Any]:
    iv = os.urandom(12)
    plaintext = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    ct = AESGCM(key).encrypt(iv, plaintext, lp(label) + lp(cell_id.encode()))
    return {"v": 1, "key_id": key_id(key), "iv": b64encode(iv), "ct": b64encode(ct)}


def _open(key: bytes, label: bytes, cell_id: str, sealed: dict[str, Any]) -> Any:
    if sealed.get("v") != 1 or sealed.get("key_id") != key_id(key):
        raise SealedNotebookError(f"cell {cell_id}: sealed with another key")
    try:
        iv = b64decode(sealed.get("iv"), "iv", 12)
        ct = b64decode(sealed.get("ct"), "ct", limit=1 << 31)
        plaintext = AESGCM(key).decrypt(iv, ct, lp(label) + lp(cell_id.encode()))
    except (ValueError, InvalidTag):
        raise SealedNotebookError(f"cell {cell_id}: sealed content was modified") from None
    return json.loads(plaintext)


def seal_notebook(nb: dict[str, Any], key: bytes, *, sources: bool = False) -> dict[str, Any]:
    """Seal every code cell's outputs (and sources if asked) in place; return ``nb``."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        if not cell.get("id"):  # the id binds the ciphertext to its cell
            cell["id"] = os.urandom(8).hex()
        cell_id = str(cell["id"])
        outputs = cell.get("outputs") or []
        if outputs:
            cell["outputs"] = [
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {
                        "text/plain": PLACEHOLDER,
                        MIME: _seal(key, LABEL_OUTPUTS, cell_id, outputs),
                    },
                }
            ]
        if sources:
            source = cell.get("source", "")
            text = "".join(source) if isinstance(source, list) else source
            cell.setdefault("metadata", {})[SOURCE_KEY] = _seal(key, LABEL_SOURCE, cell_id, text)
            cell["source"] = SOURCE_PLACEHOLDER
    return nb


def open_notebook(nb: dict[str, Any], key: bytes) -> dict[str, Any]:
    """Restore sealed outputs and sources in place; a wrong key or a change names the cell."""
    for cell in nb.get("cells", []):
        cell_id = str(cell.get("id", ""))
        outputs = cell.get("outputs") or []
        if len(outputs) == 1 and MIME in (outputs[0].get("data") or {}):
            cell["outputs"] = _open(key, LABEL_OUTPUTS, cell_id, outputs[0]["data"][MIME])
        sealed_source = (cell.get("metadata") or {}).pop(SOURCE_KEY, None)
        if sealed_source is not None:
            cell["source"] = _open(key, LABEL_SOURCE, cell_id, sealed_source)
    return nb
