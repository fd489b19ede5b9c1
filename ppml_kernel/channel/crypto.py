"""The cryptography of ``ppml-attest/2``: binding, owner proofs, key schedule, sealed frames.

Everything here is a pure function of its inputs so that the browser (TypeScript on
WebCrypto) and the kernel compute byte-identical values; ``tests/data/channel-vectors.json``
pins them. The primitives come from ``cryptography``: P-256 ECDH and ECDSA,
SHA-256/512, HKDF-SHA-256 and AES-256-GCM. Nothing is hand-rolled except the byte layouts, which
are written down in ``docs/protocol.md``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ppml_kernel import crypto as _c
from ppml_kernel.channel.errors import AttestedChannelError
from ppml_kernel.channel.protocol import NONCE_SIZE as NONCE_SIZE
from ppml_kernel.channel.protocol import PROTOCOL as PROTOCOL
from ppml_kernel.channel.protocol import PUBLIC_KEY_SIZE as PUBLIC_KEY_SIZE

SESSION_ID_SIZE = 16
KEY_SIZE = 32
IV_SIZE = 12
TAG_SIZE = 16
MAX_SEQ = 2**32 - 1  # far beyond any notebook session; a session past it must be re-attested

SIGNATURE_SIZE = 64  # ECDSA P-256, r || s (IEEE P1363, what WebCrypto's sign returns)
OWNERS_DIGEST_SIZE = 32

LABEL_REPORT_DATA = b"ppml-attest/2 report-data"
LABEL_TRANSCRIPT = b"ppml-attest/2 transcript"
LABEL_FRAME = b"ppml-attest/2 frame"
LABEL_OWNERS = b"ppml-attest/2 owners"
LABEL_OWNER_PROOF = b"ppml-attest/2 owner-proof"
LABEL_OWNER_GRANT = b"ppml-attest/2 owner-grant"
NO_OWNER = bytes(OWNERS_DIGEST_SIZE)

# Streams: each has its own key, IV and sequence counter (docs/protocol.md, 4.2).
DIR_B2K = 1  # attestation frames, browser -> kernel
DIR_K2B = 2  # attestation frames, kernel -> browser
DIR_B2K_SHELL = 3
DIR_B2K_STDIN = 4
DIR_K2B_SHELL = 5
DIR_K2B_IOPUB = 6
DIR_K2B_STDIN = 7
STREAMS: dict[int, str] = {
    DIR_B2K: "b2k",
    DIR_K2B: "k2b",
    DIR_B2K_SHELL: "b2k shell",
    DIR_B2K_STDIN: "b2k stdin",
    DIR_K2B_SHELL: "k2b shell",
    DIR_K2B_IOPUB: "k2b iopub",
    DIR_K2B_STDIN: "k2b stdin",
}
BROWSER_STREAMS = frozenset({DIR_B2K, DIR_B2K_SHELL, DIR_B2K_STDIN})


class ChannelCryptoError(AttestedChannelError, ValueError):
    """A frame or key failed a cryptographic check. Never carries secret material."""


lp = _c.lp
public_bytes = _c.public_bytes
generate_key = _c.generate_key


def check_public_key(raw: bytes, what: str) -> ec.EllipticCurvePublicKey:
    """Parse a 65-byte uncompressed P-256 point; raise with ``what`` named if it is not one."""
    if len(raw) != PUBLIC_KEY_SIZE or raw[0] != 0x04:
        raise ChannelCryptoError(
            f"{what} must be a {PUBLIC_KEY_SIZE}-byte uncompressed P-256 point, "
            f"got {len(raw)} bytes"
        )
    try:
        return _c.load_public_key(raw)
    except ValueError as exc:
        raise ChannelCryptoError(f"{what} is not a point on P-256") from exc


def check_nonce(nonce: bytes) -> bytes:
    """The browser's nonce must be exactly 32 bytes."""
    if len(nonce) != NONCE_SIZE:
        raise ChannelCryptoError(f"nonce must be {NONCE_SIZE} bytes, got {len(nonce)}")
    return nonce


def owners_digest(owners: list[bytes] | tuple[bytes, ...]) -> bytes:
    """32 zero bytes for an unowned kernel, else SHA-256 over the owner keys in order."""
    if not owners:
        return NO_OWNER
    h = hashlib.sha256()
    h.update(lp(LABEL_OWNERS))
    for key in owners:
        h.update(lp(key))
    return h.digest()


def report_data(
    nonce: bytes, browser_pub: bytes, enclave_pub: bytes, owner_pub: bytes, digest: bytes
) -> bytes:
    """The 64 bytes the quote's REPORT_DATA must hold for this handshake.

    SHA-512 over the domain label, the browser nonce, both ephemeral public keys, the
    browser's owner key and the digest of the kernel's accepted owners, each
    length-prefixed: any change to any of them changes REPORT_DATA.
    """
    h = hashlib.sha512()
    h.update(lp(LABEL_REPORT_DATA))
    h.update(lp(check_nonce(nonce)))
    h.update(lp(browser_pub))
    h.update(lp(enclave_pub))
    h.update(lp(owner_pub))
    h.update(lp(digest))
    return h.digest()


def transcript_hash(
    nonce: bytes,
    browser_pub: bytes,
    enclave_pub: bytes,
    owner_pub: bytes,
    digest: bytes,
    quote: bytes,
) -> bytes:
    """SHA-256 over everything both sides saw; it salts the key schedule and names the session."""
    h = hashlib.sha256()
    h.update(lp(LABEL_TRANSCRIPT))
    for part in (nonce, browser_pub, enclave_pub, owner_pub, digest, quote):
        h.update(lp(part))
    return h.digest()


def ecdh(private_key: ec.EllipticCurvePrivateKey, peer_pub: bytes) -> bytes:
    """The 32-byte x-coordinate shared secret (WebCrypto ``deriveBits(..., 256)``)."""
    return _c.ecdh(private_key, check_public_key(peer_pub, "peer public key"))


_hkdf = _c.hkdf_sha256


@dataclass(frozen=True)
class DirectionKeys:
    """Key and IV base for one direction of the channel (kept out of reprs and tracebacks)."""

    key: bytes = field(repr=False)
    iv: bytes = field(repr=False)


@dataclass(frozen=True)
class SessionKeys:
    """Everything the key schedule yields for one session: one key and IV per stream."""

    session_id: bytes
    transcript_hash: bytes
    streams: dict[int, DirectionKeys] = field(repr=False)

    @property
    def b2k(self) -> DirectionKeys:
        return self.streams[DIR_B2K]

    @property
    def k2b(self) -> DirectionKeys:
        return self.streams[DIR_K2B]


def derive_session_keys(shared: bytes, th: bytes) -> SessionKeys:
    """HKDF-SHA-256 (salt = transcript hash) into independent keys for every stream."""
    streams = {
        code: DirectionKeys(
            _hkdf(shared, th, f"ppml-attest/2 {name} key".encode(), KEY_SIZE),
            _hkdf(shared, th, f"ppml-attest/2 {name} iv".encode(), IV_SIZE),
        )
        for code, name in STREAMS.items()
    }
    return SessionKeys(session_id=th[:SESSION_ID_SIZE], transcript_hash=th, streams=streams)


# ------------------------------------------------------------------ owner keys (ECDSA)
def generate_owner_key() -> ec.EllipticCurvePrivateKey:
    """A long-term owner key (the browser keeps its own non-extractable in IndexedDB)."""
    return _c.generate_key()


def owner_fingerprint(owner_pub: bytes) -> str:
    """First 16 hex digits of SHA-256(owner key), grouped by four: what people compare."""
    digest = hashlib.sha256(owner_pub).hexdigest()[:16]
    return " ".join(digest[i : i + 4] for i in range(0, 16, 4))


def _sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _verify(owner_pub: bytes, signature: bytes, message: bytes, what: str) -> None:
    key = check_public_key(owner_pub, "owner_pub")
    if len(signature) != SIGNATURE_SIZE:
        raise ChannelCryptoError(f"{what} must be {SIGNATURE_SIZE} bytes, got {len(signature)}")
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ChannelCryptoError(f"{what} does not verify with the owner key") from None


def owner_proof_message(th: bytes) -> bytes:
    return lp(LABEL_OWNER_PROOF) + th


def sign_owner_proof(key: ec.EllipticCurvePrivateKey, th: bytes) -> bytes:
    """The owner's signature over this session's transcript (sent in ``finished``)."""
    return _sign(key, owner_proof_message(th))


def verify_owner_proof(owner_pub: bytes, signature: bytes, th: bytes) -> None:
    _verify(owner_pub, signature, owner_proof_message(th), "owner_sig")


def grant_message(session_id: bytes, new_owner_pub: bytes) -> bytes:
    return lp(LABEL_OWNER_GRANT) + session_id + new_owner_pub


def sign_grant(key: ec.EllipticCurvePrivateKey, session_id: bytes, new_owner_pub: bytes) -> bytes:
    """An owner's signature adding ``new_owner_pub`` (bound to the granting session)."""
    return _sign(key, grant_message(session_id, new_owner_pub))


def verify_grant(
    owner_pub: bytes, signature: bytes, session_id: bytes, new_owner_pub: bytes
) -> None:
    _verify(owner_pub, signature, grant_message(session_id, new_owner_pub), "grant sig")


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
    return _c.aead(keys.key).encrypt(
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
        return _c.aead(keys.key).decrypt(
            frame_nonce(keys.iv, seq), ciphertext, frame_aad(session_id, direction, seq)
        )
    except _c.InvalidTag:
        raise ChannelCryptoError(
            f"frame {seq} failed authentication (tampered, replayed from another session, "
            "or sealed with other keys)"
        ) from None
