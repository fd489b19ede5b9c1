"""The cryptographic primitives the browser channel and the key broker share.

Both run an ephemeral P-256 ECDH, derive keys with HKDF-SHA-256 and seal with
AES-256-GCM. One copy here keeps the two from drifting apart; it sits below every
layer (it imports only ``cryptography``), so ``keys`` uses it without importing
``channel``. The byte layouts built on top stay with their protocols.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag as InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey
Aead = AESGCM


def lp(data: bytes) -> bytes:
    """Length-prefix ``data`` (u32 big-endian) so concatenations cannot be re-split."""
    return struct.pack(">I", len(data)) + data


def generate_key() -> PrivateKey:
    """A fresh ephemeral P-256 key (one per handshake or broker run)."""
    return ec.generate_private_key(ec.SECP256R1())


def public_bytes(key: PrivateKey | PublicKey) -> bytes:
    """SEC1 uncompressed encoding (what WebCrypto's ``exportKey('raw')`` returns)."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def load_public_key(raw: bytes) -> PublicKey:
    """Parse an uncompressed P-256 point; ``ValueError`` if it is not one."""
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)


def ecdh(private_key: PrivateKey, peer: PublicKey) -> bytes:
    """The 32-byte x-coordinate shared secret (WebCrypto ``deriveBits(..., 256)``)."""
    return private_key.exchange(ec.ECDH(), peer)


def hkdf_sha256(secret: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    """HKDF-SHA-256 (RFC 5869); ``salt=None`` is the RFC's zero salt."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def aead(key: bytes) -> Aead:
    """AES-GCM under ``key`` (``encrypt``/``decrypt`` raise :class:`InvalidTag` on tamper)."""
    return AESGCM(key)
