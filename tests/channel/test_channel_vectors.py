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

DATA = json.loads((Path(__file__).parents[1] / "data" / "channel-vectors.json").read_text())


def key(d_hex: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int(d_hex, 16), ec.SECP256R1())


STREAM_CODES = {name: code for code, name in crypto.STREAMS.items()}


@pytest.mark.parametrize("v", DATA["vectors"], ids=lambda v: v["name"])
def test_key_schedule_and_frames(v: dict) -> None:
    b, e, o = key(v["browser_private_d"]), key(v["enclave_private_d"]), key(v["owner_private_d"])
    bpub, epub, opub = crypto.public_bytes(b), crypto.public_bytes(e), crypto.public_bytes(o)
    assert (bpub.hex(), epub.hex(), opub.hex()) == (
        v["browser_pub"],
        v["enclave_pub"],
        v["owner_pub"],
    )
    owners = [bytes.fromhex(k) for k in v["owners"]]
    digest = crypto.owners_digest(owners)
    assert digest.hex() == v["owners_digest"]
    assert (digest == crypto.NO_OWNER) == (not owners)
    nonce = bytes.fromhex(v["nonce"])
    assert crypto.report_data(nonce, bpub, epub, opub, digest).hex() == v["report_data"]
    shared = crypto.ecdh(e, bpub)
    assert shared.hex() == v["shared_secret"] == crypto.ecdh(b, epub).hex()
    th = crypto.transcript_hash(nonce, bpub, epub, opub, digest, bytes.fromhex(v["quote"]))
    assert th.hex() == v["transcript_hash"]
    keys = crypto.derive_session_keys(shared, th)
    assert keys.session_id.hex() == v["session_id"]
    for name, expected in v["stream_keys"].items():
        k = keys.streams[STREAM_CODES[name]]
        assert (k.key.hex(), k.iv.hex()) == (expected["key"], expected["iv"])
    # Every stream has its own key and IV: no (key, nonce) pair is shared.
    assert len({k.key for k in keys.streams.values()}) == len(crypto.STREAMS)
    # Owner proof and grant: verifiable signatures over the recorded messages.
    assert crypto.owner_proof_message(th).hex() == v["owner_proof_message"]
    crypto.verify_owner_proof(opub, bytes.fromhex(v["owner_sig"]), th)
    with pytest.raises(crypto.ChannelCryptoError):
        crypto.verify_owner_proof(bpub, bytes.fromhex(v["owner_sig"]), th)
    g = v["grant"]
    new_owner = bytes.fromhex(g["new_owner_pub"])
    assert crypto.grant_message(keys.session_id, new_owner).hex() == g["message"]
    crypto.verify_grant(opub, bytes.fromhex(g["sig"]), keys.session_id, new_owner)
    for f in v["frames"]:
        direction = STREAM_CODES[f["direction"]]
        d = keys.streams[direction]
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


@pytest.mark.parametrize("v", DATA["vectors"], ids=lambda v: v["name"])
def test_sealed_notebook_messages(v: dict) -> None:
    """Sealed Jupyter messages open to the recorded bodies, and only with their own ids."""
    from ppml_kernel.channel import envelope

    b, e, o = key(v["browser_private_d"]), key(v["enclave_private_d"]), key(v["owner_private_d"])
    owners = [bytes.fromhex(k) for k in v["owners"]]
    th = bytes.fromhex(v["transcript_hash"])
    keys = crypto.derive_session_keys(crypto.ecdh(e, crypto.public_bytes(b)), th)
    assert crypto.public_bytes(o).hex() == v["owner_pub"] and owners is not None
    for m in v["messages"]:
        stream = STREAM_CODES[m["stream"]]
        env = envelope.envelope_of(m["sealed_content"])
        assert env is not None and env.sid == v["session_id"]
        ct = bytes.fromhex(m["ciphertext"])
        pt = crypto.open_frame(keys.streams[stream], keys.session_id, stream, env.seq, ct)
        assert pt.hex() == m["plaintext"]
        browser_side = stream in crypto.BROWSER_STREAMS
        ids = (
            envelope.request_ids(m["header"])
            if browser_side
            else envelope.reply_ids(m["header"], m["parent_header"])
        )
        body = envelope.unpack(pt, ids)
        assert body.content == m["content"]
        assert [x.hex() for x in body.buffers] == m["buffers"]
        moved = {**ids, "msg_id": "another-message"}
        with pytest.raises(protocol.ProtocolError) as exc:
            envelope.unpack(pt, moved)
        assert exc.value.code == "binding"
        assert stream == (
            envelope.browser_stream(m["channel"])
            if browser_side
            else envelope.kernel_stream(m["channel"])
        )


def test_recorded_handshake_kernel_side() -> None:
    """The recorded frames open with the keys derived from the recorded private keys."""
    h = DATA["handshake"]
    hello, evidence, finished, ready, secret, result = (m["msg"] for m in h["messages"])
    quote = protocol.b64decode(evidence["quote"], "quote")
    nonce, bpub, opub = protocol.parse_hello(hello)
    e = key(h["enclave_private_d"])
    epub = crypto.public_bytes(e)
    assert protocol.b64decode(evidence["enclave_pub"], "enclave_pub") == epub
    assert evidence["owners"] == []  # a fresh kernel: the recorded session claims it
    # REPORT_DATA inside the recorded quote (SGX v3: bytes 368..432) binds the handshake.
    assert quote[368:432] == crypto.report_data(nonce, bpub, epub, opub, crypto.NO_OWNER)
    th = crypto.transcript_hash(nonce, bpub, epub, opub, crypto.NO_OWNER, quote)
    keys = crypto.derive_session_keys(crypto.ecdh(e, bpub), th)
    assert keys.session_id.hex() == h["session_id"]
    seq, ct = protocol.parse_sealed(finished)
    inner = protocol.decode_inner(
        crypto.open_frame(keys.b2k, keys.session_id, crypto.DIR_B2K, seq, ct), protocol.B2K_INNER
    )
    assert inner["type"] == "finished"
    crypto.verify_owner_proof(opub, protocol.parse_finished(inner)[1], th)
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
    assert session.open(finished)["type"] == "finished" and session.ready and session.claimed
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


def test_recorded_session_is_refused_by_a_kernel_owned_by_someone_else() -> None:
    """The same recorded browser, against a kernel that another key already owns: its
    finished is refused (not_owner), the session never becomes ready, owners unchanged."""
    from ppml_kernel.channel.owners import OwnerRegistry

    h = DATA["handshake"]
    hello, evidence, finished, *_ = (m["msg"] for m in h["messages"])
    owners = OwnerRegistry()
    stranger = crypto.public_bytes(crypto.generate_owner_key())
    owners.authorize(stranger, crypto.NO_OWNER)
    session = ServerSession("comm-1", owners)

    class AnyQuote(_RecordedQuote):
        def quote(self, report_data: bytes) -> bytes:
            return self._quote

    answer = session.handshake(
        hello,
        AnyQuote(protocol.b64decode(evidence["quote"], "quote")),
        enclave_key=key(h["enclave_private_d"]),
    )
    assert answer["owners"] == [protocol.b64encode(stranger)]
    with pytest.raises(protocol.ProtocolError) as refused:
        session.open(finished)
    assert refused.value.code in ("not_owner", "decrypt")
    assert not session.ready and owners.keys() == [stranger]
