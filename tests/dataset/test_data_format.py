"""ppml-aead/1: round trips, every tamper case, key errors, sniffing, rotation, streaming."""

from __future__ import annotations

import hashlib
import io
import os
import random
import struct
import tracemalloc
from pathlib import Path

import pytest

from ppml_kernel.data import format as F
from ppml_kernel.data.errors import (
    CorruptFileError,
    ExtendedFileError,
    HeaderTamperedError,
    NotEncryptedError,
    TamperedChunkError,
    TruncatedFileError,
    UnknownKeyError,
    UnsupportedVersionError,
    WrongKeyError,
)
from ppml_kernel.keys.files import generate_kek
from ppml_kernel.keys.store import KeyStore, KeyStoreProvider

CS = 4096  # small chunks so tests cross many chunk edges cheaply
STRIDE = CS + F.TAG_SIZE


@pytest.fixture
def store() -> KeyStore:
    s = KeyStore()
    s.put("k1", generate_kek())
    s.put("k2", generate_kek())
    return s


@pytest.fixture
def provider(store) -> KeyStoreProvider:
    return KeyStoreProvider(store)


def encrypt_bytes(data: bytes, provider, key_id: str = "k1", cs: int = CS) -> bytes:
    out = io.BytesIO()
    F.encrypt_stream(io.BytesIO(data), out, provider, key_id, cs)
    return out.getvalue()


def decrypt_bytes(blob: bytes, provider, source: str = "<mem>") -> bytes:
    out = io.BytesIO()
    F.decrypt_stream(io.BytesIO(blob), out, provider, source=source)
    return out.getvalue()


def write(tmp_path: Path, name: str, blob: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(blob)
    return p


def read_file(path: Path, provider) -> bytes:
    with F.EncryptedFile(path, provider) as ef:
        return b"".join(bytes(v) for v in ef.chunks())


SIZES = [0, 1, CS - 1, CS, CS + 1, 2 * CS - 1, 2 * CS, 2 * CS + 1, 5 * CS + 17]


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_stream_and_random_access(size, provider, tmp_path):
    data = os.urandom(size)
    blob = encrypt_bytes(data, provider)
    chunks = max(1, -(-size // CS))
    assert len(blob) == F.HEADER_SIZE + size + chunks * F.TAG_SIZE
    assert decrypt_bytes(blob, provider) == data
    path = write(tmp_path, "f.ppml", blob)
    with F.EncryptedFile(path, provider) as ef:
        assert ef.plaintext_size == size
        assert ef.chunk_count == chunks
        rng = random.Random(size)
        for _ in range(20):
            a = rng.randint(0, size)
            b = rng.randint(a, size)
            assert b"".join(bytes(v) for v in ef.read_range(a, b)) == data[a:b]
        stream = ef.open_plaintext()
        stream.seek(size // 3)
        assert stream.read() == data[size // 3 :]


def test_every_file_has_a_fresh_data_key_and_nonce(provider):
    a = encrypt_bytes(b"same", provider)
    b = encrypt_bytes(b"same", provider)
    assert a[24:36] != b[24:36]  # file nonce
    assert a[F.HEADER_SIZE :] != b[F.HEADER_SIZE :]


class _Pipe(io.RawIOBase):
    """Encrypts a generator lazily as it is read: a multi-GB stream without the GBs."""

    def __init__(self, pieces, provider) -> None:
        self._pieces = iter(pieces)
        self._queue: list[bytes] = []
        self._offset = 0
        self._writer = F.EncryptingWriter(self, provider, "k1", 1 << 20, close_raw=False)
        self._done = False

    def write(self, b) -> int:  # the EncryptingWriter's sink (its buffer is reused: copy)
        self._queue.append(bytes(b))
        return len(b)

    def readable(self) -> bool:
        return True

    def readinto(self, out) -> int:
        out = memoryview(out)
        n = 0
        while n < len(out):
            if not self._queue:
                if self._done:
                    break
                piece = next(self._pieces, None)
                if piece is None:
                    self._writer.close()
                    self._done = True
                else:
                    self._writer.write(piece)
                continue
            head = self._queue[0]
            take = min(len(out) - n, len(head) - self._offset)
            out[n : n + take] = head[self._offset : self._offset + take]
            n += take
            self._offset += take
            if self._offset == len(head):
                self._queue.pop(0)
                self._offset = 0
        return n


def test_multi_gigabyte_stream_in_constant_memory(provider):
    total = 2 << 30
    piece = 1 << 20
    expected = hashlib.sha256()

    def pieces():
        block = bytearray(os.urandom(piece))
        for i in range(total // piece):
            block[:8] = struct.pack(">Q", i)
            data = bytes(block)
            expected.update(data)
            yield data

    class Sink:
        def __init__(self) -> None:
            self.h = hashlib.sha256()
            self.n = 0

        def write(self, b) -> None:
            self.h.update(b)
            self.n += len(b)

    sink = Sink()
    tracemalloc.start()
    try:
        n = F.decrypt_stream(_Pipe(pieces(), provider), sink, provider)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == total == sink.n
    assert sink.h.digest() == expected.digest()
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB is not constant memory"


# --------------------------------------------------------------------------- tampering


@pytest.fixture
def blob(provider) -> tuple[bytes, bytes]:
    data = os.urandom(4 * CS + 100)  # 5 chunks, the last one short
    return data, encrypt_bytes(data, provider)


def chunk_at(i: int) -> slice:
    return slice(F.HEADER_SIZE + i * STRIDE, F.HEADER_SIZE + (i + 1) * STRIDE)


def both_readers(tmp_path, blob_bytes, provider):
    """Yield a callable per reader (streaming and random access) that decrypts everything."""
    path = write(tmp_path, "t.ppml", blob_bytes)
    return [
        lambda: decrypt_bytes(blob_bytes, provider, source=str(path)),
        lambda: read_file(path, provider),
    ]


@pytest.mark.parametrize("chunk", [0, 2, 4])
def test_bit_flip_names_file_and_chunk_and_emits_only_authentic_prefix(
    blob, provider, tmp_path, chunk
):
    data, b = blob
    bad = bytearray(b)
    bad[chunk_at(chunk).start + 7] ^= 0x01
    path = write(tmp_path, "t.ppml", bytes(bad))
    out = io.BytesIO()
    with pytest.raises(TamperedChunkError) as info:
        F.decrypt_stream(io.BytesIO(bytes(bad)), out, provider, source=str(path))
    assert info.value.chunk == chunk
    assert f"chunk {chunk}" in str(info.value) and str(path) in str(info.value)
    assert out.getvalue() == data[: chunk * CS]  # nothing of the failed chunk
    with pytest.raises(TamperedChunkError, match=f"chunk {chunk}"):
        read_file(path, provider)


def test_failed_chunk_buffer_is_wiped(blob, provider, tmp_path):
    _, b = blob
    bad = bytearray(b)
    bad[chunk_at(1).start] ^= 0x80
    path = write(tmp_path, "t.ppml", bytes(bad))
    with F.EncryptedFile(path, provider) as ef:
        ef.chunk(0)
        with pytest.raises(TamperedChunkError):
            ef.chunk(1)
        assert not any(ef._plain[:CS])


def test_tag_flip_detected(blob, provider, tmp_path):
    _, b = blob
    bad = bytearray(b)
    bad[chunk_at(1).stop - 1] ^= 0x01
    for read in both_readers(tmp_path, bytes(bad), provider):
        with pytest.raises(TamperedChunkError, match="chunk 1"):
            read()


def test_truncation_at_a_chunk_boundary(blob, provider, tmp_path):
    _, b = blob
    cut = b[: chunk_at(3).stop]  # drop the final chunk
    for read in both_readers(tmp_path, cut, provider):
        with pytest.raises(TruncatedFileError, match="truncated"):
            read()


def test_truncation_inside_a_chunk(blob, provider, tmp_path):
    _, b = blob
    for cut in (b[: chunk_at(2).start + 100], b[: chunk_at(2).start + 5], b[:-1]):
        for read in both_readers(tmp_path, cut, provider):
            with pytest.raises(CorruptFileError):
                read()


def test_header_only_and_empty_files(provider, tmp_path):
    b = encrypt_bytes(b"", provider)
    for read in both_readers(tmp_path, b[: F.HEADER_SIZE], provider):
        with pytest.raises(TruncatedFileError):
            read()
    for read in both_readers(tmp_path, b[:100], provider):
        with pytest.raises(TruncatedFileError):
            read()
    for read in both_readers(tmp_path, b"", provider):
        with pytest.raises(NotEncryptedError, match="empty file"):
            read()


def test_extension_is_detected(blob, provider, tmp_path):
    data, b = blob
    last = b[chunk_at(4).start :]
    for extended in (b + last, b + os.urandom(STRIDE), b + os.urandom(3)):
        for read in both_readers(tmp_path, extended, provider):
            with pytest.raises(CorruptFileError):
                read()
    # A full appended chunk of the same file makes the old final chunk non-final.
    exact = b[: chunk_at(4).start] + b[chunk_at(3)] + b[chunk_at(3)]
    exact_full = encrypt_bytes(data[: 4 * CS], provider)
    with pytest.raises(ExtendedFileError, match="extended"):
        decrypt_bytes(exact_full + exact_full[chunk_at(0)], provider)
    del exact


def test_reordering_chunks(blob, provider, tmp_path):
    _, b = blob
    swapped = b[: F.HEADER_SIZE] + b[chunk_at(1)] + b[chunk_at(0)] + b[chunk_at(2).start :]
    for read in both_readers(tmp_path, swapped, provider):
        with pytest.raises(TamperedChunkError, match="chunk 0"):
            read()


def test_chunk_swap_between_files_with_the_same_key(provider, tmp_path):
    a = encrypt_bytes(os.urandom(3 * CS), provider)
    b = encrypt_bytes(os.urandom(3 * CS), provider)
    mixed = a[: chunk_at(1).start] + b[chunk_at(1)] + a[chunk_at(2).start :]
    for read in both_readers(tmp_path, mixed, provider):
        with pytest.raises(TamperedChunkError, match="chunk 1"):
            read()
    # A whole header from another file: the data key unwraps, but no chunk opens.
    frankenstein = b[: F.HEADER_SIZE] + a[F.HEADER_SIZE :]
    for read in both_readers(tmp_path, frankenstein, provider):
        with pytest.raises(TamperedChunkError, match="chunk 0"):
            read()


@pytest.mark.parametrize(
    ("offset", "error"),
    [
        (0, NotEncryptedError),  # magic
        (11, NotEncryptedError),  # version inside the magic
        (17, CorruptFileError),  # header size
        (18, UnsupportedVersionError),  # cipher id
        (22, HeaderTamperedError),  # chunk size (still in range): fixed fields are bound
        (30, HeaderTamperedError),  # file nonce
        (40, CorruptFileError),  # reserved
        (64, CorruptFileError),  # key id length
        (161, WrongKeyError),  # key check value
        (170, HeaderTamperedError),  # wrap nonce
        (200, HeaderTamperedError),  # wrapped data key
        (240, CorruptFileError),  # reserved in the key slot
    ],
)
def test_header_edits(blob, provider, tmp_path, offset, error):
    _, b = blob
    bad = bytearray(b)
    bad[offset] ^= 0x02
    for read in both_readers(tmp_path, bytes(bad), provider):
        with pytest.raises(error):
            read()


def test_key_id_edit(blob, provider, tmp_path):
    _, b = blob
    bad = bytearray(b)
    bad[65:67] = b"k2"  # another key the reader has: key check fails
    for read in both_readers(tmp_path, bytes(bad), provider):
        with pytest.raises(WrongKeyError, match="'k2'"):
            read()
    bad[65:67] = b"k9"  # a key nobody has
    for read in both_readers(tmp_path, bytes(bad), provider):
        with pytest.raises(UnknownKeyError, match="'k9'"):
            read()


def test_wrong_key_names_file_and_key_id(blob, tmp_path):
    _, b = blob
    other = KeyStore()
    other.put("k1", generate_kek())
    path = write(tmp_path, "sales.csv.ppml", b)
    with pytest.raises(WrongKeyError) as info:
        read_file(path, KeyStoreProvider(other))
    msg = str(info.value)
    assert str(path) in msg and "'k1'" in msg and "wrong key" in msg
    with pytest.raises(UnknownKeyError, match=r"sales\.csv\.ppml.*'k1'"):
        read_file(path, KeyStoreProvider(KeyStore()))


def test_errors_never_contain_key_material(blob, store, provider, tmp_path):
    _, b = blob
    secrets = [store.get("k1"), store.get("k2")]
    bad = bytearray(b)
    bad[200] ^= 1
    messages = []
    for blob_bytes in (bytes(bad), b[:-1], b + b"x"):
        for read in both_readers(tmp_path, blob_bytes, provider):
            try:
                read()
            except Exception as exc:
                messages.append(repr(exc) + str(exc))
    assert messages
    for m in messages:
        for s in secrets:
            assert s.hex() not in m and repr(s) not in m


# --------------------------------------------------------------------------- foreign files


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"id,name,amount\n1,ann,3.5\n", "plaintext CSV text"),
        (b'{"a": 1}\n{"a": 2}\n', "plaintext JSON"),
        (b"PAR1\x15\x04\x15", "plaintext Parquet"),
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"hello world\n", "plaintext text"),
        (b"\x89ppml-aead/2\r\n\x1a\n" + bytes(240), "version '2'"),
        (bytes(range(256)) * 2, "binary data"),
    ],
)
def test_foreign_files_say_what_they_look_like(tmp_path, provider, head, expected):
    path = write(tmp_path, "x", head)
    with pytest.raises(NotEncryptedError, match=expected):
        read_file(path, provider)
    with pytest.raises(NotEncryptedError, match=expected):
        decrypt_bytes(head, provider)


def test_bigdl_cbc_file_is_recognised(tmp_path, provider):
    # BigDL PPML's .cbc layout: 0x80, 8-byte timestamp, 16-byte IV, CBC blocks, 32-byte HMAC.
    blob = (
        b"\x80"
        + struct.pack(">Q", 1_700_000_000)
        + os.urandom(16)
        + os.urandom(64)
        + os.urandom(32)
    )
    path = write(tmp_path, "data.csv.cbc", blob)
    with pytest.raises(NotEncryptedError, match=r"BigDL PPML \.cbc"):
        read_file(path, provider)


# --------------------------------------------------------------------------- rotation


def test_rewrap_changes_only_the_key_slot(provider, store, tmp_path):
    data = os.urandom(3 * CS + 5)
    path = write(tmp_path, "r.ppml", encrypt_bytes(data, provider, "k1"))
    before = path.read_bytes()
    new_store = KeyStore()
    new_store.put("k-2025", generate_kek())
    new = KeyStoreProvider(new_store)
    F.rewrap_file(path, provider, new, "k-2025")
    after = path.read_bytes()
    assert after[: F.FIXED_SIZE] == before[: F.FIXED_SIZE]
    assert after[F.HEADER_SIZE :] == before[F.HEADER_SIZE :]  # no chunk re-encrypted
    assert after[F.FIXED_SIZE : F.HEADER_SIZE] != before[F.FIXED_SIZE : F.HEADER_SIZE]
    assert read_file(path, new) == data
    with pytest.raises(UnknownKeyError, match="k-2025"):
        read_file(path, provider)


def test_rewrap_with_the_wrong_old_key_changes_nothing(provider, tmp_path):
    path = write(tmp_path, "r.ppml", encrypt_bytes(b"abc", provider, "k1"))
    before = path.read_bytes()
    wrong = KeyStore()
    wrong.put("k1", generate_kek())
    with pytest.raises(WrongKeyError):
        F.rewrap_file(path, KeyStoreProvider(wrong), provider, "k2")
    assert path.read_bytes() == before


def test_abandoned_writer_leaves_an_invalid_file(provider):
    out = io.BytesIO()
    w = F.EncryptingWriter(out, provider, "k1", CS, close_raw=False)
    w.write(os.urandom(3 * CS))
    w.abort()
    with pytest.raises(TruncatedFileError):
        decrypt_bytes(out.getvalue(), provider)


def test_invalid_key_ids_and_chunk_sizes(provider):
    for bad in ("", "a" * 96, "has space", "-lead", "é"):
        with pytest.raises(ValueError):
            F.new_header(provider, bad)
    with pytest.raises(ValueError):
        F.new_header(provider, "k1", chunk_size=100)


def test_header_describe_has_no_key_material(provider):
    header, key = F.new_header(provider, "k1")
    described = repr(header.describe())
    assert key.hex() not in described
    assert header.wrapped.ciphertext.hex() not in described
    assert "k1" in described and "AES-256-GCM" in described


def test_an_independent_reader_written_from_docs_format_md(store, provider):
    """Decrypt with nothing but docs/format.md and the cryptography primitives."""
    import hashlib as h

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    data = os.urandom(3 * CS + 123)
    blob = encrypt_bytes(data, provider, "k1")

    def hkdf(ikm: bytes, info: bytes, n: int) -> bytes:
        return HKDF(hashes.SHA256(), n, None, info).derive(ikm)

    fixed, slot = blob[:64], blob[64:256]
    assert fixed[:16] == b"\x89ppml-aead/1\r\n\x1a\n"
    hsize, cipher, wrap, chunk_size = struct.unpack(">HBBI", fixed[16:24])
    assert (hsize, cipher, wrap, chunk_size) == (256, 1, 1, CS)
    file_nonce = fixed[24:36]
    digest = h.sha256(fixed).digest()
    klen = slot[0]
    key_id = slot[1 : 1 + klen]
    kcv, wnonce, wrapped = slot[96:104], slot[104:116], slot[116:164]
    kek = store.get(key_id.decode())
    assert kcv == hkdf(kek, b"ppml-aead/1 key check", 8)
    ctx = b"ppml-aead/1 data key\x00" + digest
    aad = struct.pack(">H", len(ctx)) + ctx + bytes([klen]) + key_id + kcv
    dk = AESGCM(hkdf(kek, b"ppml-aead/1 kek wrap", 32)).decrypt(wnonce, wrapped, aad)
    body = blob[256:]
    stride = chunk_size + 16
    n = -(-len(body) // stride)
    out = b""
    for i in range(n):
        nonce = (int.from_bytes(file_nonce, "big") ^ i).to_bytes(12, "big")
        aad_i = digest + struct.pack(">QB", i, 1 if i == n - 1 else 0)
        out += AESGCM(dk).decrypt(nonce, body[i * stride : (i + 1) * stride], aad_i)
    assert out == data
