"""Write tests/data/channel-vectors.json: ppml-attest/1 transcripts with fixed keys.

Both test suites check these: tests/test_channel_vectors.py (Python, the kernel side)
and extensions/jupyterlab-ppml/test/channel.test.ts (TypeScript, the browser side).
The handshake vector carries a real DCAP v3 quote from the test PKI (tests/dcap_synth.py)
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

import dcap_synth  # noqa: E402

from ppml_kernel.channel import crypto, protocol  # noqa: E402
from ppml_kernel.channel.client import BrowserClient  # noqa: E402
from ppml_kernel.channel.session import ServerSession  # noqa: E402

VERIFY_AT = 1767225600  # 2026-01-01T00:00:00Z


def fixed_key(label: str) -> ec.EllipticCurvePrivateKey:
    d = int.from_bytes(hashlib.sha256(label.encode()).digest(), "big") % (2**256 - 2**224) + 1
    return ec.derive_private_key(d, ec.SECP256R1())


def d_hex(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_numbers().private_value.to_bytes(32, "big").hex()


def frame(keys: crypto.SessionKeys, direction: int, seq: int, inner: dict) -> dict:
    d = keys.b2k if direction == crypto.DIR_B2K else keys.k2b
    pt = protocol.encode_inner(inner)
    return {
        "direction": "b2k" if direction == crypto.DIR_B2K else "k2b",
        "seq": seq,
        "plaintext": pt.decode(),
        "nonce": crypto.frame_nonce(d.iv, seq).hex(),
        "aad": crypto.frame_aad(keys.session_id, direction, seq).hex(),
        "ciphertext": crypto.seal(d, keys.session_id, direction, seq, pt).hex(),
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
    ]


def crypto_vector(name: str, quote: bytes) -> dict:
    b = fixed_key(f"{name}/browser")
    e = fixed_key(f"{name}/enclave")
    nonce = hashlib.sha256(f"{name}/nonce".encode()).digest()
    bpub, epub = crypto.public_bytes(b), crypto.public_bytes(e)
    shared = crypto.ecdh(b, epub)
    assert shared == crypto.ecdh(e, bpub)
    th = crypto.transcript_hash(nonce, bpub, epub, quote)
    keys = crypto.derive_session_keys(shared, th)
    frames = [
        frame(keys, crypto.DIR_B2K, 0, {"type": "finished", "verdict": {"status": "UpToDate"}}),
        frame(keys, crypto.DIR_K2B, 0, {"type": "ready", "session_id": keys.session_id.hex()}),
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
    return {
        "name": name,
        "browser_private_d": d_hex(b),
        "browser_pub": bpub.hex(),
        "enclave_private_d": d_hex(e),
        "enclave_pub": epub.hex(),
        "nonce": nonce.hex(),
        "quote": quote.hex(),
        "report_data": crypto.report_data(nonce, bpub, epub).hex(),
        "shared_secret": shared.hex(),
        "transcript_hash": th.hex(),
        "session_id": keys.session_id.hex(),
        "b2k_key": keys.b2k.key.hex(),
        "b2k_iv": keys.b2k.iv.hex(),
        "k2b_key": keys.k2b.key.hex(),
        "k2b_iv": keys.k2b.iv.hex(),
        "frames": frames,
        "bad_frames": bad_frames(keys, frames[2]),
    }


def handshake_vector() -> dict:
    pki = dcap_synth.Pki(now=VERIFY_AT)
    attester = dcap_synth.SynthAttester(pki)
    client = BrowserClient(
        fixed_key("handshake/browser"), hashlib.sha256(b"handshake/nonce").digest()
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
        "Checked by tests/test_channel_vectors.py and "
        "extensions/jupyterlab-ppml/test/channel.test.ts.",
        "vectors": [
            crypto_vector("short-quote", b"not a real quote, only transcript bytes"),
            crypto_vector("empty-quote", b""),
        ],
        "handshake": handshake_vector(),
    }
    path = ROOT / "tests" / "data" / "channel-vectors.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
