"""The ``ppml-aead/1`` file format: a fixed 256-byte header and chunked AES-256-GCM.

docs/format.md is the normative description; this module implements it. In short:

* Each file has its own random 256-bit data key, wrapped in the header by a
  key-encryption key (KEK) named by a key id. Rotating the KEK rewrites the 192-byte
  key slot only (:func:`rewrap_file`); the chunks are never re-encrypted.
* Plaintext is cut into fixed-size chunks; chunk ``i`` is sealed with AES-256-GCM under
  the data key, nonce ``file_nonce XOR i`` and AAD ``SHA-256(fixed header) || i ||
  final``. Bit flips, reordering, truncation, extension, chunk swaps between files and
  edits of the fixed header all fail authentication.
* Ciphertext chunks have a fixed size, so chunk ``i`` sits at a computable offset:
  readers seek, and Spark splits one file into chunk ranges.

Everything streams in constant memory (one or two chunk buffers). The plaintext of a
chunk that fails authentication is wiped and never returned.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ppml_kernel.data.errors import (
    BadDataKeyError,
    CorruptFileError,
    ExtendedFileError,
    HeaderTamperedError,
    NotEncryptedError,
    TamperedChunkError,
    TruncatedFileError,
    UnknownKeyError,
    UnsupportedVersionError,
    UnwrapError,
    WrongKeyError,
)
from ppml_kernel.data.sniff import describe_foreign
from ppml_kernel.keys.ids import KEY_ID_MAX, check_key_id  # the one key-id rule
from ppml_kernel.keys.provider import KeyProvider, WrappedKey
from ppml_kernel.keys.wrap import KEY_CHECK_SIZE

FORMAT_NAME = "ppml-aead/1"
MAGIC = b"\x89ppml-aead/1\r\n\x1a\n"
HEADER_SIZE = 256
FIXED_SIZE = 64
TAG_SIZE = 16
NONCE_SIZE = 12
DATA_KEY_SIZE = 32
WRAPPED_SIZE = DATA_KEY_SIZE + TAG_SIZE
CIPHER_AES_256_GCM = 1
WRAP_AES_256_GCM_HKDF = 1
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 1 << 12
MAX_CHUNK_SIZE = 1 << 26
FILE_SUFFIX = ".ppml"

_FIXED = struct.Struct(">16sHBBI12s28s")  # magic, header size, cipher, wrap, chunk, nonce, rsv
_SLOT = struct.Struct(">B95s8s12s48s28s")  # key id len, key id, kcv, wrap nonce, wrapped, rsv
_WRAP_CONTEXT = b"ppml-aead/1 data key\x00"

assert _FIXED.size == FIXED_SIZE and FIXED_SIZE + _SLOT.size == HEADER_SIZE


@dataclass(frozen=True)
class Header:
    """A parsed ``ppml-aead/1`` header. Holds no key material, only the wrapped key."""

    chunk_size: int
    file_nonce: bytes
    key_id: str
    wrapped: WrappedKey
    cipher: int = CIPHER_AES_256_GCM
    wrap_alg: int = WRAP_AES_256_GCM_HKDF

    def fixed_bytes(self) -> bytes:
        """The first 64 bytes: authenticated by every chunk and by the key slot."""
        return _FIXED.pack(
            MAGIC, HEADER_SIZE, self.cipher, self.wrap_alg, self.chunk_size, self.file_nonce,
            b"\0" * 28,
        )

    def fixed_digest(self) -> bytes:
        return hashlib.sha256(self.fixed_bytes()).digest()

    def wrap_context(self) -> bytes:
        return _WRAP_CONTEXT + self.fixed_digest()

    def slot_bytes(self) -> bytes:
        kid = self.key_id.encode("ascii")
        w = self.wrapped
        return _SLOT.pack(len(kid), kid, w.key_check, w.nonce, w.ciphertext, b"\0" * 28)

    def to_bytes(self) -> bytes:
        return self.fixed_bytes() + self.slot_bytes()

    def describe(self) -> dict[str, object]:
        """Header fields for ``inspect``: never the data key, never the wrapped key bytes."""
        return {
            "format": FORMAT_NAME,
            "cipher": "AES-256-GCM" if self.cipher == CIPHER_AES_256_GCM else self.cipher,
            "key_wrap": (
                "AES-256-GCM under HKDF-SHA256(KEK)"
                if self.wrap_alg == WRAP_AES_256_GCM_HKDF
                else self.wrap_alg
            ),
            "key_id": self.key_id,
            "key_check": self.wrapped.key_check.hex(),
            "chunk_size": self.chunk_size,
            "file_nonce": self.file_nonce.hex(),
            "header_size": HEADER_SIZE,
        }

    @classmethod
    def parse(cls, data: bytes, source: str, size: int | None = None) -> Header:
        """Parse the first 256 bytes of ``source``; say what the file looks like if foreign."""
        if len(data) < len(MAGIC) or not data.startswith(MAGIC):
            raise NotEncryptedError(
                f"{source} is not a {FORMAT_NAME} file: it looks like "
                f"{describe_foreign(data, size)}"
            )
        if len(data) < HEADER_SIZE:
            raise TruncatedFileError(
                f"{source} is truncated: its {FORMAT_NAME} header is incomplete "
                f"({len(data)} of {HEADER_SIZE} bytes)"
            )
        _, hsize, cipher, wrap_alg, chunk, nonce, rsv = _FIXED.unpack_from(data, 0)
        if hsize != HEADER_SIZE or rsv != b"\0" * 28:
            raise CorruptFileError(f"{source}: corrupt {FORMAT_NAME} header (fixed fields)")
        if cipher != CIPHER_AES_256_GCM or wrap_alg != WRAP_AES_256_GCM_HKDF:
            raise UnsupportedVersionError(
                f"{source}: unsupported cipher {cipher} / key wrap {wrap_alg} in its header"
            )
        if not MIN_CHUNK_SIZE <= chunk <= MAX_CHUNK_SIZE:
            raise CorruptFileError(f"{source}: corrupt header: chunk size {chunk} out of range")
        klen, kid, kcv, wnonce, wrapped, rsv2 = _SLOT.unpack_from(data, FIXED_SIZE)
        if not 1 <= klen <= KEY_ID_MAX or kid[klen:] != b"\0" * (KEY_ID_MAX - klen) or any(rsv2):
            raise CorruptFileError(f"{source}: corrupt {FORMAT_NAME} header (key slot)")
        try:
            key_id = check_key_id(kid[:klen].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise CorruptFileError(f"{source}: corrupt header: invalid key id") from None
        return cls(chunk, nonce, key_id, WrappedKey(kcv, wnonce, wrapped), cipher, wrap_alg)


def new_header(
    wrapper: KeyProvider, key_id: str, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[Header, bytes]:
    """A fresh header (random data key and file nonce) and its data key."""
    check_key_id(key_id)
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(
            f"chunk size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes"
        )
    data_key = AESGCM.generate_key(bit_length=256)
    blank = WrappedKey(b"\0" * KEY_CHECK_SIZE, b"\0" * NONCE_SIZE, b"\0" * WRAPPED_SIZE)
    header = Header(chunk_size, os.urandom(NONCE_SIZE), key_id, blank)
    wrapped = _checked_wrap(wrapper, key_id, data_key, header.wrap_context())
    return Header(chunk_size, header.file_nonce, key_id, wrapped), data_key


def _checked_wrap(wrapper: KeyProvider, key_id: str, data_key: bytes, ctx: bytes) -> WrappedKey:
    wrapped = wrapper.wrap(key_id, data_key, ctx)
    if (
        len(wrapped.key_check) != KEY_CHECK_SIZE
        or len(wrapped.nonce) != NONCE_SIZE
        or len(wrapped.ciphertext) != WRAPPED_SIZE
    ):
        raise ValueError("key provider returned a wrapped key of the wrong shape")
    return wrapped


def unwrap_data_key(header: Header, wrapper: KeyProvider, source: str) -> bytes:
    """Recover the data key of ``source``; errors name the file and the key id."""
    kid = header.key_id
    try:
        key = wrapper.unwrap(kid, header.wrapped, header.wrap_context())
    except UnknownKeyError:
        raise UnknownKeyError(
            f"{source}: no key with key id {kid!r} is available (the file was encrypted "
            f"for key id {kid!r})",
            key_id=kid,
        ) from None
    except WrongKeyError:
        raise WrongKeyError(
            f"{source}: wrong key: the key available as {kid!r} is not the key this file "
            "was encrypted with (key check value differs)",
            key_id=kid,
        ) from None
    except UnwrapError:
        raise HeaderTamperedError(
            f"{source}: header was modified: the data-key slot does not authenticate "
            f"under key {kid!r} although that key matches the file's key check value"
        ) from None
    if not isinstance(key, (bytes, bytearray)) or len(key) != DATA_KEY_SIZE:
        # The slot authenticated (or the provider never checked it): the header is fine,
        # the provider (or the program that wrote the file) is not. Never show the bytes.
        got = (f"a {len(key)}-byte data key" if isinstance(key, (bytes, bytearray))
               else f"a {type(key).__name__} instead of a data key")
        describe = getattr(wrapper, "describe", None)
        who = describe() if callable(describe) else type(wrapper).__name__
        raise BadDataKeyError(
            f"{source}: the key provider ({who}) returned {got} for key id {kid!r}; a "
            f"{FORMAT_NAME} data key is {DATA_KEY_SIZE} bytes, so the provider (or the "
            "program that wrote this file) is faulty, not the file's header",
            key_id=kid,
        )
    return bytes(key)


# --------------------------------------------------------------------------- chunk crypto


def _nonce(file_nonce: bytes, index: int) -> bytes:
    return file_nonce[:4] + (int.from_bytes(file_nonce[4:], "big") ^ index).to_bytes(8, "big")


class ChunkCipher:
    """Seals and opens chunks of one file; knows nothing about files or offsets."""

    def __init__(self, header: Header, data_key: bytes, source: str) -> None:
        self._aead = AESGCM(data_key)
        self._nonce = header.file_nonce
        self._digest = header.fixed_digest()
        self.source = source

    def _aad(self, index: int, final: bool) -> bytes:
        return self._digest + struct.pack(">QB", index, 1 if final else 0)

    def seal_into(self, index: int, final: bool, plain: memoryview, out: bytearray) -> memoryview:
        n = len(plain) + TAG_SIZE
        view = memoryview(out)[:n]
        self._aead.encrypt_into(_nonce(self._nonce, index), plain, self._aad(index, final), view)
        return view

    def open_into(self, index: int, final: bool, sealed: memoryview, out: bytearray) -> memoryview:
        """Decrypt chunk ``index`` into ``out``; wipe ``out`` and raise a named error on failure."""
        n = len(sealed) - TAG_SIZE
        view = memoryview(out)[:n]
        try:
            nonce = _nonce(self._nonce, index)
            self._aead.decrypt_into(nonce, sealed, self._aad(index, final), view)
        except InvalidTag:
            view[:] = bytes(n)  # never let unauthenticated plaintext survive
            raise self._diagnose(index, final, sealed) from None
        return view

    def _diagnose(self, index: int, final: bool, sealed: memoryview) -> CorruptFileError:
        """Tell truncation and extension apart from tampering (the other flag verifies)."""
        try:
            self._aead.decrypt(_nonce(self._nonce, index), sealed, self._aad(index, not final))
        except InvalidTag:
            return TamperedChunkError(
                f"{self.source}: chunk {index} failed authentication (modified, reordered, "
                "from another file, or the header's fixed fields were edited)",
                source=self.source,
                chunk=index,
            )
        if final:
            return TruncatedFileError(
                f"{self.source} is truncated: chunk {index} is authentic but is not the "
                "final chunk, so data after it is missing"
            )
        return ExtendedFileError(
            f"{self.source} was extended: chunk {index} is the authentic final chunk but "
            "more data follows it"
        )


@dataclass(frozen=True)
class Layout:
    """Where chunks sit in a file of ``size`` bytes with ``chunk_size``-byte chunks."""

    chunk_size: int
    size: int

    @property
    def stride(self) -> int:
        return self.chunk_size + TAG_SIZE

    @property
    def chunk_count(self) -> int:
        body = self.size - HEADER_SIZE
        return (body + self.stride - 1) // self.stride

    @property
    def plaintext_size(self) -> int:
        return self.size - HEADER_SIZE - self.chunk_count * TAG_SIZE

    def offset(self, index: int) -> int:
        return HEADER_SIZE + index * self.stride

    def sealed_len(self, index: int) -> int:
        if index < self.chunk_count - 1:
            return self.stride
        return self.size - self.offset(index)

    def validate(self, source: str) -> None:
        body = self.size - HEADER_SIZE
        if body < TAG_SIZE:
            raise TruncatedFileError(f"{source} is truncated: it has a header but no chunks")
        last = body - (self.chunk_count - 1) * self.stride
        if last < TAG_SIZE:
            raise CorruptFileError(
                f"{source} is truncated or extended: its size does not fit the chunk layout "
                f"(a {last}-byte fragment after chunk {self.chunk_count - 2})"
            )


# --------------------------------------------------------------------------- readers


def _read_exact(f: BinaryIO, n: int) -> bytes:
    parts = []
    while n > 0:
        b = f.read(n)
        if not b:
            break
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


class EncryptedFile:
    """Random access to the plaintext of one seekable ``ppml-aead/1`` file.

    Chunks are read with positioned reads and decrypted into one reusable buffer, so a
    Spark task can read any chunk range of a large file in constant memory.
    """

    def __init__(self, path: str | os.PathLike[str], wrapper: KeyProvider) -> None:
        self.path = os.fspath(path)
        self.source = self.path
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            size = os.fstat(self._fd).st_size
            self.header = Header.parse(os.pread(self._fd, HEADER_SIZE, 0), self.source, size)
            self.layout = Layout(self.header.chunk_size, size)
            self.layout.validate(self.source)
            key = unwrap_data_key(self.header, wrapper, self.source)
            self._cipher = ChunkCipher(self.header, key, self.source)
        except BaseException:
            os.close(self._fd)
            raise
        self._sealed = bytearray(self.layout.stride)
        self._plain = bytearray(self.layout.chunk_size)
        self._cached: int | None = None

    # context manager -------------------------------------------------------
    def __enter__(self) -> EncryptedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file and wipe the plaintext buffer (the last chunk read stays in it)."""
        self._plain[:] = bytes(len(self._plain))
        self._cached = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # access ----------------------------------------------------------------
    @property
    def chunk_size(self) -> int:
        return self.layout.chunk_size

    @property
    def chunk_count(self) -> int:
        return self.layout.chunk_count

    @property
    def plaintext_size(self) -> int:
        return self.layout.plaintext_size

    def chunk(self, index: int) -> memoryview:
        """Plaintext of chunk ``index``. The view is valid until the next call: copy to keep."""
        if self._cached == index:
            return memoryview(self._plain)[: self._cached_len]
        if not 0 <= index < self.layout.chunk_count:
            raise IndexError(f"{self.source}: no chunk {index}")
        n = self.layout.sealed_len(index)
        sealed = memoryview(self._sealed)[:n]
        got = os.preadv(self._fd, [sealed], self.layout.offset(index))
        if got != n:
            raise TruncatedFileError(f"{self.source} shrank while being read (chunk {index})")
        self._cached = None
        final = index == self.layout.chunk_count - 1
        view = self._cipher.open_into(index, final, sealed, self._plain)
        self._cached, self._cached_len = index, len(view)
        return view

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[memoryview]:
        """Plaintext chunks ``start`` to ``stop`` (exclusive); each view is reused."""
        stop = self.layout.chunk_count if stop is None else min(stop, self.layout.chunk_count)
        for i in range(start, stop):
            yield self.chunk(i)

    def read_range(self, begin: int, end: int) -> Iterator[memoryview]:
        """Plaintext bytes ``[begin, end)`` as a sequence of (reused) views."""
        for buf, lo, hi in self.spans(begin, end):
            yield memoryview(buf)[lo:hi]

    def spans(self, begin: int, end: int) -> Iterator[tuple[bytearray, int, int]]:
        """``(buffer, lo, hi)`` triples covering plaintext ``[begin, end)``.

        ``buffer[lo:hi]`` is valid until the next step: search or count it in place
        (``bytearray.count``/``find`` take bounds) without copying.
        """
        end = min(end, self.plaintext_size)
        cs = self.chunk_size
        pos = begin
        while pos < end:
            index, off = divmod(pos, cs)
            view = self.chunk(index)
            hi = min(len(view), off + end - pos)
            if hi <= off:
                break
            yield self._plain, off, hi
            pos += hi - off

    def find(self, needle: bytes, start: int) -> int:
        """Plaintext offset of the first ``needle`` byte at or after ``start``, or -1."""
        cs = self.chunk_size
        pos = start
        while pos < self.plaintext_size:
            index, off = divmod(pos, cs)
            view = self.chunk(index)
            hit = self._plain.find(needle, off, len(view))
            if hit >= 0:
                return index * cs + hit
            pos = (index + 1) * cs
        return -1

    def open_plaintext(self) -> PlaintextStream:
        """A seekable, read-only binary stream over the plaintext (e.g. for pyarrow)."""
        return PlaintextStream(self)


class PlaintextStream(io.RawIOBase):
    """Seekable plaintext view of an :class:`EncryptedFile` (Parquet inside ppml-aead)."""

    def __init__(self, ef: EncryptedFile) -> None:
        super().__init__()
        self._ef = ef
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._ef.plaintext_size}
        self._pos = max(0, base[whence] + offset)
        return self._pos

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        out = memoryview(b).cast("B")
        n = 0
        for view in self._ef.read_range(self._pos, self._pos + len(out)):
            out[n : n + len(view)] = view
            n += len(view)
        self._pos += n
        return n

    def size(self) -> int:
        return self._ef.plaintext_size

    def close(self) -> None:
        self._ef.close()
        super().close()


def read_header(path: str | os.PathLike[str]) -> Header:
    """Parse the header of ``path`` without any key (for ``inspect`` and key lookup)."""
    source = os.fspath(path)
    with open(source, "rb") as f:
        head = f.read(HEADER_SIZE)
        size = os.fstat(f.fileno()).st_size
    return Header.parse(head, source, size)


def iter_plaintext(src: BinaryIO, wrapper: KeyProvider, source: str) -> Iterator[memoryview]:
    """Decrypt a (possibly non-seekable) stream chunk by chunk, with one chunk of lookahead.

    Yielded views are reused: consume or copy each one before asking for the next.
    """
    head = _read_exact(src, HEADER_SIZE)
    header = Header.parse(head, source, None if len(head) >= len(MAGIC) else len(head))
    cipher = ChunkCipher(header, unwrap_data_key(header, wrapper, source), source)
    stride = header.chunk_size + TAG_SIZE
    bufs = [bytearray(stride), bytearray(stride)]
    plain = bytearray(header.chunk_size)
    cur = _fill(src, bufs[0])
    if cur == 0:
        raise TruncatedFileError(f"{source} is truncated: it has a header but no chunks")
    index = 0
    try:
        while True:
            nxt = _fill(src, bufs[1]) if cur == stride else 0
            final = nxt == 0
            if cur < TAG_SIZE:
                raise CorruptFileError(
                    f"{source} is truncated or extended: a {cur}-byte fragment after chunk "
                    f"{index - 1}"
                )
            yield cipher.open_into(index, final, memoryview(bufs[0])[:cur], plain)
            if final:
                return
            bufs.reverse()
            cur, index = nxt, index + 1
    finally:
        plain[:] = bytes(len(plain))  # done, failed or abandoned: no plaintext stays behind


def _fill(src: BinaryIO, buf: bytearray) -> int:
    view = memoryview(buf)
    n = 0
    readinto = getattr(src, "readinto", None)
    while n < len(buf):
        if readinto is not None:
            got = readinto(view[n:])
        else:
            data = src.read(len(buf) - n)
            got = len(data)
            view[n : n + got] = data
        if not got:
            break
        n += got
    return n


# --------------------------------------------------------------------------- writer


class EncryptingWriter(io.RawIOBase):
    """A write-only stream that encrypts into ``raw`` chunk by chunk.

    Only :meth:`close` seals the final chunk: a writer abandoned after an error (or
    closed with :meth:`abort`) leaves a file that readers reject as truncated, never
    a shorter file that looks complete.
    """

    def __init__(
        self,
        raw: BinaryIO,
        wrapper: KeyProvider,
        key_id: str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        *,
        source: str = "<stream>",
        close_raw: bool = True,
    ) -> None:
        super().__init__()
        self.header, key = new_header(wrapper, key_id, chunk_size)
        self._cipher = ChunkCipher(self.header, key, source)
        self._raw = raw
        self._close_raw = close_raw
        self._buf = bytearray(chunk_size)
        self._out = bytearray(chunk_size + TAG_SIZE)
        self._fill = 0
        self._index = 0
        self.plaintext_bytes = 0
        raw.write(self.header.to_bytes())

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed EncryptingWriter")
        src = memoryview(data).cast("B")
        cs = len(self._buf)
        pos = 0
        while pos < len(src):
            if self._fill == cs:  # a full chunk and more data: it is not the final one
                self._seal(final=False)
            take = min(cs - self._fill, len(src) - pos)
            self._buf[self._fill : self._fill + take] = src[pos : pos + take]
            self._fill += take
            pos += take
        self.plaintext_bytes += len(src)
        return len(src)

    def _seal(self, final: bool) -> None:
        plain = memoryview(self._buf)[: self._fill]
        self._raw.write(self._cipher.seal_into(self._index, final, plain, self._out))
        self._index += 1
        self._fill = 0

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._seal(final=True)
            self._raw.flush()
        finally:
            self._wipe()
            if self._close_raw:
                self._raw.close()
            super().close()

    def abort(self) -> None:
        """Stop without sealing a final chunk (the output stays invalid on purpose)."""
        if not self.closed:
            self._wipe()
            if self._close_raw:
                self._raw.close()
            super().close()

    def _wipe(self) -> None:
        self._buf[:] = bytes(len(self._buf))


def encrypt_stream(
    src: BinaryIO | Iterable[bytes],
    dst: BinaryIO,
    wrapper: KeyProvider,
    key_id: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    source: str = "<stream>",
    progress: Callable[[int], None] | None = None,
) -> Header:
    """Encrypt everything from ``src`` (a binary stream or an iterable of bytes) into ``dst``."""
    w = EncryptingWriter(dst, wrapper, key_id, chunk_size, source=source, close_raw=False)
    try:
        if hasattr(src, "read"):
            buf = bytearray(chunk_size)
            while n := _fill(src, buf):  # type: ignore[arg-type]
                w.write(memoryview(buf)[:n])
                if progress:
                    progress(n)
        else:
            for piece in src:
                w.write(piece)
                if progress:
                    progress(len(piece))
    except BaseException:
        w.abort()
        raise
    w.close()
    return w.header


def decrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    wrapper: KeyProvider,
    *,
    source: str = "<stream>",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Decrypt ``src`` into ``dst``; returns the plaintext size.

    Chunks are written as they authenticate, so on a failure ``dst`` holds an authentic
    prefix: callers that write files must delete the output on error (the CLI does).
    """
    total = 0
    for view in iter_plaintext(src, wrapper, source):
        dst.write(view)
        total += len(view)
        if progress:
            progress(len(view) + TAG_SIZE)
    return total


def rewrap_header(header: Header, old: KeyProvider, new: KeyProvider, new_key_id: str,
                  source: str) -> Header:
    """The same header with its data key re-sealed under ``new_key_id`` (chunks unchanged)."""
    check_key_id(new_key_id)
    key = unwrap_data_key(header, old, source)
    wrapped = _checked_wrap(new, new_key_id, key, header.wrap_context())
    return Header(header.chunk_size, header.file_nonce, new_key_id, wrapped, header.cipher,
                  header.wrap_alg)


def rewrap_file(path: str | os.PathLike[str], old: KeyProvider, new: KeyProvider,
                new_key_id: str) -> Header:
    """Rewrite only the key slot of ``path`` in place (the first 256 bytes).

    The 192-byte slot lives inside one disk sector, and the new slot is verified to
    unwrap before it is written, so a crash leaves either the old or the new slot.
    """
    source = os.fspath(path)
    header = read_header(source)
    new_header_ = rewrap_header(header, old, new, new_key_id, source)
    unwrap_data_key(new_header_, new, source)  # prove the new slot opens before writing it
    fd = os.open(source, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        slot = new_header_.slot_bytes()
        if os.pwrite(fd, slot, FIXED_SIZE) != len(slot):
            raise OSError(f"{source}: short write while rewrapping")
        os.fsync(fd)
    finally:
        os.close(fd)
    return new_header_
