"""Write tests/data/channel-vectors.json: ppml-attest/2 transcripts with fixed keys.

Both test suites check these: tests/channel/test_channel_vectors.py (Python, the kernel side)
and extensions/jupyterlab-ppml/test/channel.test.ts (TypeScript, the browser side).
The handshake vector carries a real DCAP v3 quote from the test PKI (tests/support/dcap_synth.py)
whose REPORT_DATA binds the transcript, verifiable with that PKI's root at `verify_at`.

Run: PYTHONPATH=.:tests python tests/tools/make_channel_vectors.py
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import dcap_synth  # noqa: E402

from ppml_kernel.channel import crypto, envelope, protocol  # noqa: E402
from ppml_kernel.channel.client import BrowserClient  # noqa: E402
from ppml_kernel.channel.session import ServerSession  # noqa: E402

VERIFY_AT = 1767225600  # 2026-01-01T00:00:00Z


def fixed_key(label: str) -> ec.EllipticCurvePrivateKey:
    d = int.from_bytes(hashlib.sha256(label.encode()).digest(), "big") % (2**256 - 2**224) + 1
    return ec.derive_private_key(d, ec.SECP256R1())


def d_hex(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_numbers().private_value.to_bytes(32, "big").hex()


def frame(keys: crypto.SessionKeys, direction: int, seq: int, inner: dict) -> dict:
    d = keys.streams[direction]
    pt = protocol.encode_inner(inner)
    return {
        "direction": crypto.STREAMS[direction],
        "seq": seq,
        "plaintext": pt.decode(),
        "nonce": crypto.frame_nonce(d.iv, seq).hex(),
        "aad": crypto.frame_aad(keys.session_id, direction, seq).hex(),
        "ciphertext": crypto.seal(d, keys.session_id, direction, seq, pt).hex(),
    }


def message(
    keys: crypto.SessionKeys,
    stream: int,
    seq: int,
    channel: str,
    header: dict,
    parent: dict,
    content: dict,
    buffers: list[bytes],
) -> dict:
    """A sealed Jupyter message (docs/protocol.md, 6): clear headers, envelope, ciphertext."""
    ids = (
        envelope.request_ids(header)
        if stream in crypto.BROWSER_STREAMS
        else envelope.reply_ids(header, parent)
    )
    pt = envelope.pack(ids, envelope.Body(content, {}, buffers))
    ct = crypto.seal(keys.streams[stream], keys.session_id, stream, seq, pt)
    return {
        "stream": crypto.STREAMS[stream],
        "channel": channel,
        "header": header,
        "parent_header": parent,
        "content": content,
        "buffers": [b.hex() for b in buffers],
        "sealed_content": envelope.envelope_content(keys.session_id.hex(), seq),
        "plaintext": pt.hex(),
        "ciphertext": ct.hex(),
    }


def bad_frames(keys: crypto.SessionKeys, good: dict) -> list[dict]:
    """Variants of a good b2k frame that must all fail to open."""
    ct = bytes.fromhex(good["ciphertext"])
    flipped = bytearray(ct)
    flipped[0] ^= 1
    tag_flip = bytearray(ct)
    tag_flip[-1] ^= 0x80
    other = crypto.seal(
        keys.k2b, keys.session_id, crypto.DIR_B2K, good["seq"], good["plaintext"].encode()
    )
    moved = crypto.seal(
        keys.streams[crypto.DIR_B2K_SHELL],
        keys.session_id,
        crypto.DIR_B2K_SHELL,
        good["seq"],
        good["plaintext"].encode(),
    )
    return [
        {"why": "ciphertext bit flipped", "seq": good["seq"], "ciphertext": bytes(flipped).hex()},
        {"why": "tag bit flipped", "seq": good["seq"], "ciphertext": bytes(tag_flip).hex()},
        {
            "why": "replayed under the next sequence number",
            "seq": good["seq"] + 1,
            "ciphertext": ct.hex(),
        },
        {"why": "truncated", "seq": good["seq"], "ciphertext": ct[:-1].hex()},
        {
            "why": "sealed with the other direction's key",
            "seq": good["seq"],
            "ciphertext": other.hex(),
        },
        {
            "why": "sealed on another stream (b2k shell)",
            "seq": good["seq"],
            "ciphertext": moved.hex(),
        },
    ]


def crypto_vector(name: str, quote: bytes, owned: bool) -> dict:
    b = fixed_key(f"{name}/browser")
    e = fixed_key(f"{name}/enclave")
    o = fixed_key(f"{name}/owner")
    nonce = hashlib.sha256(f"{name}/nonce".encode()).digest()
    bpub, epub, opub = crypto.public_bytes(b), crypto.public_bytes(e), crypto.public_bytes(o)
    owners = [opub, crypto.public_bytes(fixed_key(f"{name}/colleague"))] if owned else []
    digest = crypto.owners_digest(owners)
    shared = crypto.ecdh(b, epub)
    assert shared == crypto.ecdh(e, bpub)
    th = crypto.transcript_hash(nonce, bpub, epub, opub, digest, quote)
    keys = crypto.derive_session_keys(shared, th)
    sid = keys.session_id.hex()
    owner_sig = crypto.sign_owner_proof(o, th)
    new_owner = crypto.public_bytes(fixed_key(f"{name}/new-owner"))
    grant_sig = crypto.sign_grant(o, keys.session_id, new_owner)
    frames = [
        frame(
            keys,
            crypto.DIR_B2K,
            0,
            {
                "type": "finished",
                "verdict": {"status": "UpToDate"},
                "owner_sig": protocol.b64encode(owner_sig),
            },
        ),
        frame(keys, crypto.DIR_K2B, 0, {"type": "ready", "session_id": sid}),
        frame(
            keys,
            crypto.DIR_B2K,
            1,
            {
                "type": "secret",
                "request_id": None,
                "name": "db_password",
                "value": "correct horse ✓",
            },
        ),
        frame(
            keys,
            crypto.DIR_K2B,
            1,
            {"type": "secret_result", "request_id": None, "name": "db_password", "ok": True},
        ),
    ]
    request = {"msg_id": f"{name}-exec-1", "msg_type": "execute_request", "session": "tab-1"}
    out = {"msg_id": f"{name}-out-1", "msg_type": "stream", "session": "kernel"}
    ask = {"msg_id": f"{name}-input-1", "msg_type": "input_request", "session": "kernel"}
    answer = {"msg_id": f"{name}-answer-1", "msg_type": "input_reply", "session": "tab-1"}
    messages = [
        message(
            keys,
            crypto.DIR_B2K_SHELL,
            0,
            "shell",
            request,
            {},
            {"code": "print(secret_sauce)", "silent": False},
            [],
        ),
        message(
            keys,
            crypto.DIR_K2B_IOPUB,
            0,
            "iopub",
            out,
            request,
            {"name": "stdout", "text": "42 ✓\n"},
            [],
        ),
        message(
            keys,
            crypto.DIR_K2B_STDIN,
            0,
            "stdin",
            ask,
            request,
            {"prompt": "q? ", "password": False},
            [],
        ),
        message(keys, crypto.DIR_B2K_STDIN, 0, "stdin", answer, ask, {"value": "yes"}, []),
        message(
            keys,
            crypto.DIR_B2K_SHELL,
            1,
            "shell",
            {"msg_id": f"{name}-comm-1", "msg_type": "comm_msg", "session": "tab-1"},
            {},
            {"comm_id": "w1", "data": {"method": "update"}},
            [b"\x00\x01binary"],
        ),
    ]
    return {
        "name": name,
        "browser_private_d": d_hex(b),
        "browser_pub": bpub.hex(),
        "enclave_private_d": d_hex(e),
        "enclave_pub": epub.hex(),
        "owner_private_d": d_hex(o),
        "owner_pub": opub.hex(),
        "owners": [k.hex() for k in owners],
        "owners_digest": digest.hex(),
        "nonce": nonce.hex(),
        "quote": quote.hex(),
        "report_data": crypto.report_data(nonce, bpub, epub, opub, digest).hex(),
        "shared_secret": shared.hex(),
        "transcript_hash": th.hex(),
        "session_id": sid,
        "stream_keys": {
            crypto.STREAMS[s]: {"key": k.key.hex(), "iv": k.iv.hex()}
            for s, k in keys.streams.items()
        },
        "owner_proof_message": crypto.owner_proof_message(th).hex(),
        "owner_sig": owner_sig.hex(),
        "grant": {
            "new_owner_pub": new_owner.hex(),
            "message": crypto.grant_message(keys.session_id, new_owner).hex(),
            "sig": grant_sig.hex(),
        },
        "frames": frames,
        "bad_frames": bad_frames(keys, frames[2]),
        "messages": messages,
    }


def handshake_vector() -> dict:
    pki = dcap_synth.Pki(now=VERIFY_AT)
    attester = dcap_synth.SynthAttester(pki)
    client = BrowserClient(
        fixed_key("handshake/browser"),
        hashlib.sha256(b"handshake/nonce").digest(),
        owner_key=fixed_key("handshake/owner"),
    )
    hello = client.hello()
    server = ServerSession("comm-1")
    evidence = server.handshake(
        hello,
        attester,
        kernel_info={"implementation": "ppml"},
        enclave_key=fixed_key("handshake/enclave"),
    )
    evidence["timings"] = {}
    quote = protocol.b64decode(evidence["quote"], "quote")
    finished = client.bind(
        evidence,
        quote[368:432],
        dcap_synth.verdict(quote, json.loads(evidence["collateral"]), pki.root_der, VERIFY_AT),
    )
    server.open(finished)
    assert server.ready and server.claimed
    ready = server.seal({"type": "ready", "session_id": server.session_id})
    secret = client.seal(
        {"type": "secret", "request_id": None, "name": "db_password", "value": "hunter2"}
    )
    server.open(secret)
    result = server.seal(
        {"type": "secret_result", "request_id": None, "name": "db_password", "ok": True}
    )
    return {
        "verify_at": VERIFY_AT,
        "root_der": pki.root_der.hex(),
        "browser_private_d": d_hex(fixed_key("handshake/browser")),
        "enclave_private_d": d_hex(fixed_key("handshake/enclave")),
        "owner_private_d": d_hex(fixed_key("handshake/owner")),
        "expected_status": "UpToDate",
        "session_id": server.session_id,
        "messages": [
            {"from": "browser", "msg": hello},
            {"from": "kernel", "msg": evidence},
            {"from": "browser", "msg": finished},
            {"from": "kernel", "msg": ready},
            {"from": "browser", "msg": secret},
            {"from": "kernel", "msg": result},
        ],
    }


def main() -> None:
    out = {
        "protocol": crypto.PROTOCOL,
        "note": "Generated by tests/tools/make_channel_vectors.py; hex unless stated. "
        "Checked by tests/channel/test_channel_vectors.py and "
        "extensions/jupyterlab-ppml/test/channel.test.ts.",
        "vectors": [
            crypto_vector("short-quote", b"not a real quote, only transcript bytes", False),
            crypto_vector("empty-quote", b"", True),
        ],
        "handshake": handshake_vector(),
    }
    path = ROOT / "tests" / "data" / "channel-vectors.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
