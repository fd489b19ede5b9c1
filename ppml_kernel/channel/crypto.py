"""The cryptography of ``ppml-attest/1``: binding, key schedule and sealed frames.

Everything here is a pure function of its inputs so that the browser (TypeScript on
WebCrypto) and the kernel compute byte-identical values; ``tests/data/channel-vectors.json``
pins them. The primitives come from ``cryptography``: P-256 ECDH, SHA-256/512,
HKDF-SHA-256 and AES-256-GCM. Nothing is hand-rolled except the byte layouts, which
are written down in ``docs/protocol.md``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ppml_kernel.channel.protocol import NONCE_SIZE as NONCE_SIZE
from ppml_kernel.channel.protocol import PROTOCOL as PROTOCOL
from ppml_kernel.channel.protocol import PUBLIC_KEY_SIZE as PUBLIC_KEY_SIZE

SESSION_ID_SIZE = 16
KEY_SIZE = 32
IV_SIZE = 12
TAG_SIZE = 16
MAX_SEQ = 2**32 - 1  # far beyond any notebook session; a session past it must be re-attested

LABEL_REPORT_DATA = b"ppml-attest/1 report-data"
LABEL_TRANSCRIPT = b"ppml-attest/1 transcript"
LABEL_FRAME = b"ppml-attest/1 frame"
LABEL_B2K_KEY = b"ppml-attest/1 b2k key"
LABEL_B2K_IV = b"ppml-attest/1 b2k iv"
LABEL_K2B_KEY = b"ppml-attest/1 k2b key"
LABEL_K2B_IV = b"ppml-attest/1 k2b iv"

DIR_B2K = 1  # browser -> kernel
DIR_K2B = 2  # kernel -> browser


class ChannelCryptoError(ValueError):
    """A frame or key failed a cryptographic check. Never carries secret material."""


def lp(data: bytes) -> bytes:
    """Length-prefix ``data`` (u32 big-endian) so concatenations cannot be re-split."""
    return struct.pack(">I", len(data)) + data


def check_public_key(raw: bytes, what: str) -> ec.EllipticCurvePublicKey:
    """Parse a 65-byte uncompressed P-256 point; raise with ``what`` named if it is not one."""
    if len(raw) != PUBLIC_KEY_SIZE or raw[0] != 0x04:
        raise ChannelCryptoError(
            f"{what} must be a {PUBLIC_KEY_SIZE}-byte uncompressed P-256 point, "
            f"got {len(raw)} bytes"
        )
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError as exc:
        raise ChannelCryptoError(f"{what} is not a point on P-256") from exc


def check_nonce(nonce: bytes) -> bytes:
    """The browser's nonce must be exactly 32 bytes."""
    if len(nonce) != NONCE_SIZE:
        raise ChannelCryptoError(f"nonce must be {NONCE_SIZE} bytes, got {len(nonce)}")
    return nonce


def report_data(nonce: bytes, browser_pub: bytes, enclave_pub: bytes) -> bytes:
    """The 64 bytes the quote's REPORT_DATA must hold for this handshake.

    SHA-512 over the domain label, the browser nonce and both ephemeral public keys,
    each length-prefixed: any change to any of them changes REPORT_DATA.
    """
    h = hashlib.sha512()
    h.update(lp(LABEL_REPORT_DATA))
    h.update(lp(check_nonce(nonce)))
    h.update(lp(browser_pub))
    h.update(lp(enclave_pub))
    return h.digest()


def transcript_hash(nonce: bytes, browser_pub: bytes, enclave_pub: bytes, quote: bytes) -> bytes:
    """SHA-256 over everything both sides saw; it salts the key schedule and names the session."""
    h = hashlib.sha256()
    h.update(lp(LABEL_TRANSCRIPT))
    h.update(lp(nonce))
    h.update(lp(browser_pub))
    h.update(lp(enclave_pub))
    h.update(lp(quote))
    return h.digest()


def public_bytes(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """SEC1 uncompressed encoding (what WebCrypto's ``exportKey('raw')`` returns)."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ephemeral P-256 key (one per handshake)."""
    return ec.generate_private_key(ec.SECP256R1())


def ecdh(private_key: ec.EllipticCurvePrivateKey, peer_pub: bytes) -> bytes:
    """The 32-byte x-coordinate shared secret (WebCrypto ``deriveBits(..., 256)``)."""
    return private_key.exchange(ec.ECDH(), check_public_key(peer_pub, "peer public key"))


def _hkdf(shared: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(shared)


@dataclass(frozen=True)
class DirectionKeys:
    """Key and IV base for one direction of the channel (kept out of reprs and tracebacks)."""

    key: bytes = field(repr=False)
    iv: bytes = field(repr=False)


@dataclass(frozen=True)
class SessionKeys:
    """Everything the key schedule yields for one session."""

    session_id: bytes
    transcript_hash: bytes
    b2k: DirectionKeys
    k2b: DirectionKeys


def derive_session_keys(shared: bytes, th: bytes) -> SessionKeys:
    """HKDF-SHA-256 (salt = transcript hash) into two independent directions."""
    return SessionKeys(
        session_id=th[:SESSION_ID_SIZE],
        transcript_hash=th,
        b2k=DirectionKeys(
            _hkdf(shared, th, LABEL_B2K_KEY, KEY_SIZE), _hkdf(shared, th, LABEL_B2K_IV, IV_SIZE)
        ),
        k2b=DirectionKeys(
            _hkdf(shared, th, LABEL_K2B_KEY, KEY_SIZE), _hkdf(shared, th, LABEL_K2B_IV, IV_SIZE)
        ),
    )


def frame_nonce(iv: bytes, seq: int) -> bytes:
    """IV base XOR the 64-bit sequence number in the last 8 bytes (as in TLS 1.3)."""
    counter = b"\x00\x00\x00\x00" + struct.pack(">Q", seq)
    return bytes(a ^ b for a, b in zip(iv, counter, strict=True))


def frame_aad(session_id: bytes, direction: int, seq: int) -> bytes:
    """Additional data: label, session, direction and sequence number."""
    return lp(LABEL_FRAME) + session_id + bytes([direction]) + struct.pack(">Q", seq)


def _check_seq(seq: int) -> None:
    if not 0 <= seq <= MAX_SEQ:
        raise ChannelCryptoError(f"sequence number {seq} is out of range")


def seal(
    keys: DirectionKeys, session_id: bytes, direction: int, seq: int, plaintext: bytes
) -> bytes:
    """AES-256-GCM ciphertext || tag for frame ``seq`` in ``direction``."""
    _check_seq(seq)
    return AESGCM(keys.key).encrypt(
        frame_nonce(keys.iv, seq), plaintext, frame_aad(session_id, direction, seq)
    )


def open_frame(
    keys: DirectionKeys, session_id: bytes, direction: int, seq: int, ciphertext: bytes
) -> bytes:
    """Decrypt frame ``seq``; any change to key, session, direction, seq or bytes fails."""
    _check_seq(seq)
    if len(ciphertext) < TAG_SIZE:
        raise ChannelCryptoError("sealed frame is shorter than its authentication tag")
    try:
        return AESGCM(keys.key).decrypt(
            frame_nonce(keys.iv, seq), ciphertext, frame_aad(session_id, direction, seq)
        )
    except InvalidTag:
        raise ChannelCryptoError(
            f"frame {seq} failed authentication (tampered, replayed from another session, "
            "or sealed with other keys)"
        ) from None
