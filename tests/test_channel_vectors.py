"""The kernel-side channel crypto against tests/data/channel-vectors.json.

The same file is checked by the TypeScript tests, so both sides agree byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ppml_kernel.channel import crypto, protocol
from ppml_kernel.channel.session import ServerSession

DATA = json.loads((Path(__file__).parent / "data" / "channel-vectors.json").read_text())


def key(d_hex: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int(d_hex, 16), ec.SECP256R1())


@pytest.mark.parametrize("v", DATA["vectors"], ids=lambda v: v["name"])
def test_key_schedule_and_frames(v: dict) -> None:
    b, e = key(v["browser_private_d"]), key(v["enclave_private_d"])
    bpub, epub = crypto.public_bytes(b), crypto.public_bytes(e)
    assert bpub.hex() == v["browser_pub"] and epub.hex() == v["enclave_pub"]
    nonce = bytes.fromhex(v["nonce"])
    assert crypto.report_data(nonce, bpub, epub).hex() == v["report_data"]
    shared = crypto.ecdh(e, bpub)
    assert shared.hex() == v["shared_secret"] == crypto.ecdh(b, epub).hex()
    th = crypto.transcript_hash(nonce, bpub, epub, bytes.fromhex(v["quote"]))
    assert th.hex() == v["transcript_hash"]
    keys = crypto.derive_session_keys(shared, th)
    assert keys.session_id.hex() == v["session_id"]
    assert (keys.b2k.key.hex(), keys.b2k.iv.hex()) == (v["b2k_key"], v["b2k_iv"])
    assert (keys.k2b.key.hex(), keys.k2b.iv.hex()) == (v["k2b_key"], v["k2b_iv"])
    for f in v["frames"]:
        direction = crypto.DIR_B2K if f["direction"] == "b2k" else crypto.DIR_K2B
        d = keys.b2k if direction == crypto.DIR_B2K else keys.k2b
        assert crypto.frame_nonce(d.iv, f["seq"]).hex() == f["nonce"]
        assert crypto.frame_aad(keys.session_id, direction, f["seq"]).hex() == f["aad"]
        ct = bytes.fromhex(f["ciphertext"])
        assert crypto.seal(d, keys.session_id, direction, f["seq"], f["plaintext"].encode()) == ct
        assert (
            crypto.open_frame(d, keys.session_id, direction, f["seq"], ct).decode()
            == f["plaintext"]
        )
    for bad in v["bad_frames"]:
        with pytest.raises(crypto.ChannelCryptoError):
            crypto.open_frame(
                keys.b2k,
                keys.session_id,
                crypto.DIR_B2K,
                bad["seq"],
                bytes.fromhex(bad["ciphertext"]),
            )


def test_recorded_handshake_kernel_side() -> None:
    """The recorded frames open with the keys derived from the recorded private keys."""
    h = DATA["handshake"]
    hello, evidence, finished, ready, secret, result = (m["msg"] for m in h["messages"])
    quote = protocol.b64decode(evidence["quote"], "quote")
    nonce, bpub = protocol.parse_hello(hello)
    e = key(h["enclave_private_d"])
    epub = crypto.public_bytes(e)
    assert protocol.b64decode(evidence["enclave_pub"], "enclave_pub") == epub
    # REPORT_DATA inside the recorded quote (SGX v3: bytes 368..432) binds the handshake.
    assert quote[368:432] == crypto.report_data(nonce, bpub, epub)
    th = crypto.transcript_hash(nonce, bpub, epub, quote)
    keys = crypto.derive_session_keys(crypto.ecdh(e, bpub), th)
    assert keys.session_id.hex() == h["session_id"]
    seq, ct = protocol.parse_sealed(finished)
    inner = protocol.decode_inner(
        crypto.open_frame(keys.b2k, keys.session_id, crypto.DIR_B2K, seq, ct), protocol.B2K_INNER
    )
    assert inner["type"] == "finished"
    seq, ct = protocol.parse_sealed(secret)
    inner = protocol.decode_inner(
        crypto.open_frame(keys.b2k, keys.session_id, crypto.DIR_B2K, seq, ct), protocol.B2K_INNER
    )
    assert inner == {
        "type": "secret",
        "request_id": None,
        "name": "db_password",
        "value": "hunter2",
    }
    for msg, expected_type in ((ready, "ready"), (result, "secret_result")):
        seq, ct = protocol.parse_sealed(msg)
        out = crypto.open_frame(keys.k2b, keys.session_id, crypto.DIR_K2B, seq, ct)
        assert json.loads(out)["type"] == expected_type


class _RecordedQuote:
    """An attester that answers with the recorded quote (its REPORT_DATA is checked)."""

    def __init__(self, quote: bytes) -> None:
        self._quote = quote

    def quote(self, report_data: bytes) -> bytes:
        assert self._quote[368:432] == report_data
        return self._quote

    def collateral(self) -> str | None:
        return None

    def describe(self) -> dict[str, object]:
        return {"kind": "recorded"}


def test_recorded_browser_frames_through_a_server_session() -> None:
    """A ServerSession with the recorded enclave key accepts the browser's recorded frames
    and seals its own answers byte for byte as recorded."""
    h = DATA["handshake"]
    hello, evidence, finished, ready, secret, result = (m["msg"] for m in h["messages"])
    session = ServerSession("comm-1")
    answer = session.handshake(
        hello,
        _RecordedQuote(protocol.b64decode(evidence["quote"], "quote")),
        enclave_key=key(h["enclave_private_d"]),
    )
    assert (answer["enclave_pub"], answer["quote"]) == (evidence["enclave_pub"], evidence["quote"])
    assert session.open(finished)["type"] == "finished" and session.ready
    assert session.session_id == h["session_id"]
    assert session.seal({"type": "ready", "session_id": session.session_id}) == ready
    assert session.open(secret)["value"] == "hunter2"
    sealed = session.seal(
        {"type": "secret_result", "request_id": None, "name": "db_password", "ok": True}
    )
    assert sealed == result
    with pytest.raises(protocol.ProtocolError) as replayed:
        session.open(secret)
    assert replayed.value.code == "replay"
