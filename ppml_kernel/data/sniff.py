"""Say what a file that is not ``ppml-aead/1`` looks like.

A user who points the kernel at the wrong file (the plaintext CSV, a gzip, a Parquet
file, a BigDL PPML ``.cbc`` file) deserves "this looks like CSV text" rather than
"bad magic". Only the first bytes and the size are looked at, never echoed back.
"""

from __future__ import annotations

import struct

PPML_MAGIC_PREFIX = b"\x89ppml-aead/"
# Parquet Modular Encryption with an encrypted footer (the Parquet flavour we write).
PME_MAGIC = b"PARE"

_BINARY_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"PAR1", "a plaintext Parquet file (magic PAR1)"),
    (PME_MAGIC, "a Parquet file with an encrypted footer (Parquet Modular Encryption)"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"BZh", "a bzip2-compressed file"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file"),
    (b"\xfd7zXZ\x00", "an xz-compressed file"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"ORC", "an ORC file"),
    (b"Obj\x01", "an Avro container file"),
    (b"ARROW1", "an Arrow IPC file"),
    (b"\x04\x22\x4d\x18", "an LZ4-compressed file"),
    (b"SEQ", "a Hadoop SequenceFile"),
)

# BigDL PPML's ".cbc" files (and Fernet tokens) start with version byte 0x80, an 8-byte
# big-endian Unix timestamp and a 16-byte IV, then AES-CBC blocks and a 32-byte HMAC.
_CBC_HEADER = 25
_CBC_HMAC = 32
_CBC_TIME_MIN = 1_262_304_000  # 2010-01-01
_CBC_TIME_MAX = 4_102_444_800  # 2100-01-01


def describe_foreign(head: bytes, size: int | None = None) -> str:
    """Return a short phrase for what ``head`` (the first bytes of a file) looks like."""
    if size == 0 or not head:
        return "an empty file"
    if head.startswith(PPML_MAGIC_PREFIX):
        version = head[len(PPML_MAGIC_PREFIX) :].split(b"\r", 1)[0][:8]
        shown = version.decode("ascii", "replace") if version.isascii() else "?"
        return f"a ppml-aead file of version {shown!r}, which this version cannot read"
    for magic, what in _BINARY_MAGICS:
        if head.startswith(magic):
            return what
    if _looks_like_bigdl_cbc(head, size):
        return (
            "a BigDL PPML .cbc file (AES-CBC + HMAC, Fernet-style header); its key "
            "derivation is weak: decrypt it with BigDL's tools once and re-encrypt it "
            "with `ppml-kernel encrypt`"
        )
    text = _text_kind(head)
    if text:
        return text
    return "binary data of an unknown format"


def _looks_like_bigdl_cbc(head: bytes, size: int | None) -> bool:
    if len(head) < 9 or head[0] != 0x80:
        return False
    (stamp,) = struct.unpack(">Q", head[1:9])
    if not _CBC_TIME_MIN <= stamp <= _CBC_TIME_MAX:
        return False
    if size is None:
        return True
    body = size - _CBC_HEADER - _CBC_HMAC
    return body >= 16 and body % 16 == 0


def _text_kind(head: bytes) -> str | None:
    sample = head[:4096]
    if sample.startswith(b"\xef\xbb\xbf"):
        sample = sample[3:]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        if exc.start < len(sample) - 4:
            return None
        text = sample[: exc.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    if not text or printable < 0.95 * len(text):
        return None
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return "plaintext JSON text (not encrypted)"
    first_line = stripped.split("\n", 1)[0]
    for sep, name in ((",", "comma"), ("\t", "tab"), ("|", "pipe"), (";", "semicolon")):
        if first_line.count(sep) >= 1:
            return f"plaintext CSV text ({name}-separated, not encrypted)"
    return "plaintext text (not encrypted)"
