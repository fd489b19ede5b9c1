"""The browser side of ``ppml-attest/2`` in Python.

The reference implementation the TypeScript extension is checked against, and the
core of the sealed headless client (``channel.sealed_client``). It verifies the quote
with the attestation layer's :class:`~ppml_kernel.attestation.Verifier` (dcap-qvl plus
a :class:`Policy`: the one verification path of this package), checks that REPORT_DATA
binds this handshake, checks whose owner keys the kernel accepted, derives the keys,
proves its owner key and speaks sealed frames: attestation frames, and sealed notebook
messages on the shell and stdin streams. The order is the extension's: signature
chain, then binding, then owners, then policy.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from ppml_kernel.channel import crypto, envelope, frames, protocol
from ppml_kernel.channel.protocol import ProtocolError

if TYPE_CHECKING:
    from ppml_kernel.attestation import VerificationResult, Verifier

_VERIFIED_STAGES = ("policy", "done")  # the quote's signatures checked out


def intel_root_der() -> bytes:
    """Intel's SGX Root CA (the attestation layer's pinned copy)."""
    from ppml_kernel.attestation.anchors import intel_root

    return intel_root().der


def verifier_for_root(root_der: bytes | None = None) -> Verifier:
    """The browser's trust: Intel's root, plus ``root_der`` if the user allowed it.

    A root other than Intel's is a simulated one (the extension asks the user before
    trusting it), so the policy allows simulation only when such a root is given.
    """
    from ppml_kernel.attestation import Policy, TrustAnchor, Verifier

    if root_der is None or root_der == intel_root_der():
        return Verifier(Policy())
    anchor = TrustAnchor("root allowed in the browser", root_der, simulated=True)
    return Verifier(Policy(allow_simulated=True), simulated_anchor=anchor)


def browser_verdict(result: VerificationResult) -> dict[str, Any]:
    """What the browser tells the kernel in ``finished`` (public facts, no keys)."""
    assert result.quote is not None
    return {
        "status": result.tcb_status,
        "advisory_ids": list(result.advisory_ids),
        "tee": result.quote.tee,
        # "Simulated" is decided by the anchor that verified, never by the quote.
        "simulated": result.simulated,
    }


def simulated_root(collateral: str) -> bytes | None:
    """The self-signed certificate ending the collateral's TCB Info chain (a root candidate).

    Only ever trusted after the user allowed simulation, as the extension does.
    """
    import json

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        chain = json.loads(collateral)["tcb_info_issuer_chain"]
        certs = x509.load_pem_x509_certificates(chain.encode())
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    last = certs[-1] if certs else None
    if last is None or last.subject != last.issuer:
        return None
    return last.public_bytes(Encoding.DER)


def _evidence_fields(evidence: object) -> tuple[bytes, list[bytes], bytes, str | None]:
    """(enclave_pub, owners, quote, collateral) of an ``evidence`` message, validated."""
    protocol.require_type(evidence, protocol.EVIDENCE)
    assert isinstance(evidence, dict)
    enclave_pub = protocol.b64decode(
        evidence.get("enclave_pub"), "enclave_pub", crypto.PUBLIC_KEY_SIZE
    )
    owners_field = evidence.get("owners")
    if not isinstance(owners_field, list) or len(owners_field) > protocol.MAX_OWNERS:
        raise ProtocolError("malformed", "field 'owners' must be a list of owner keys")
    owners = [protocol.b64decode(o, "owners", crypto.PUBLIC_KEY_SIZE) for o in owners_field]
    quote = protocol.b64decode(evidence.get("quote"), "quote")
    collateral = evidence.get("collateral")
    return enclave_pub, owners, quote, collateral if isinstance(collateral, str) else None


class BrowserClient:
    """One client session: ``hello()`` -> ``accept(evidence, verifier)`` -> sealed frames.

    ``owner_key`` is the long-term ECDSA key that proves who controls the kernel (a
    browser keeps its own in IndexedDB; headless tools make one per run or load one).
    """

    def __init__(
        self, private_key: Any = None, nonce: bytes | None = None, owner_key: Any = None
    ) -> None:
        self._key = private_key if private_key is not None else crypto.generate_key()
        self._owner_key = owner_key if owner_key is not None else crypto.generate_owner_key()
        self.nonce = nonce if nonce is not None else os.urandom(crypto.NONCE_SIZE)
        self.browser_pub = crypto.public_bytes(self._key)
        self.owner_pub = crypto.public_bytes(self._owner_key)
        self.keys: crypto.SessionKeys | None = None
        self.verdict: dict[str, Any] = {}
        self.result: VerificationResult | None = None
        self.owners: list[bytes] = []
        self._send_seq: dict[int, int] = {}
        self._recv_seq: dict[int, int] = {}
        self._lock = threading.Lock()

    @property
    def session_id(self) -> str:
        return self.keys.session_id.hex() if self.keys else ""

    def hello(self) -> dict[str, Any]:
        return {
            "type": protocol.HELLO,
            "protocol": crypto.PROTOCOL,
            "nonce": protocol.b64encode(self.nonce),
            "browser_pub": protocol.b64encode(self.browser_pub),
            "owner_pub": protocol.b64encode(self.owner_pub),
        }

    def accept(
        self, evidence: object, verifier: Verifier, *, at: int | None = None
    ) -> dict[str, Any]:
        """Verify the evidence at ``at`` (default now); return the sealed ``finished``.

        Raises :class:`ProtocolError`: ``collateral`` (none sent), ``verify`` (the quote
        does not verify against a trusted root), ``binding`` (REPORT_DATA is not this
        handshake's), ``not_owner`` (another party controls the kernel) or ``policy``
        (verified, but the policy rejects it).
        """
        enclave_pub, owners, quote, collateral = _evidence_fields(evidence)
        if collateral is None:
            raise ProtocolError("collateral", "the kernel sent no collateral")
        result = verifier.verify(quote, collateral, at=at)
        self.result = result
        if result.quote is None or result.stage not in _VERIFIED_STAGES:
            raise ProtocolError("verify", result.reason)
        report_data = bytes.fromhex(result.quote.report_data)
        self._check_binding(enclave_pub, owners, report_data)
        if not result.passed:
            raise ProtocolError("policy", result.reason)
        return self.bind(evidence, report_data, browser_verdict(result))

    def bind(self, evidence: object, report_data: bytes, verdict: dict[str, Any]) -> dict[str, Any]:
        """Finish a handshake whose quote was verified: check binding and owners, derive keys.

        ``report_data`` is the verified quote's REPORT_DATA; ``verdict`` goes to the
        kernel in the sealed ``finished`` (tools that pin test vectors call this directly).
        """
        enclave_pub, owners, quote, _ = _evidence_fields(evidence)
        self._check_binding(enclave_pub, owners, report_data)
        if owners and self.owner_pub not in owners:
            raise ProtocolError(
                "not_owner",
                "another party controls this kernel (its verified owner list does not "
                "include this client's owner key); nothing was sent",
            )
        digest = crypto.owners_digest(owners)
        th = crypto.transcript_hash(
            self.nonce, self.browser_pub, enclave_pub, self.owner_pub, digest, quote
        )
        self.keys = crypto.derive_session_keys(crypto.ecdh(self._key, enclave_pub), th)
        self.owners = owners
        self.verdict = dict(verdict)
        sig = crypto.sign_owner_proof(self._owner_key, th)
        return self.seal(
            {
                "type": protocol.FINISHED,
                "verdict": self.verdict,
                "owner_sig": protocol.b64encode(sig),
            }
        )

    def _check_binding(self, enclave_pub: bytes, owners: list[bytes], report_data: bytes) -> None:
        expected = crypto.report_data(
            self.nonce,
            self.browser_pub,
            enclave_pub,
            self.owner_pub,
            crypto.owners_digest(owners),
        )
        if report_data != expected:
            raise ProtocolError(
                "binding",
                "the quote's REPORT_DATA does not bind this handshake and owner list "
                "(replayed quote, or a changed owner list?)",
            )

    def grant(self, new_owner_pub: bytes, label: str) -> dict[str, Any]:
        """A sealed ``owner_grant`` adding ``new_owner_pub`` (signed by this owner key)."""
        assert self.keys is not None, "handshake not done"
        sig = crypto.sign_grant(self._owner_key, self.keys.session_id, new_owner_pub)
        return self.seal(
            {
                "type": protocol.OWNER_GRANT,
                "owner_pub": protocol.b64encode(new_owner_pub),
                "label": label,
                "sig": protocol.b64encode(sig),
            }
        )

    # ---------------------------------------------------------- attestation frames
    def seal(self, inner: dict[str, Any]) -> dict[str, Any]:
        assert self.keys is not None, "handshake not done"
        with self._lock:
            seq = self._send_seq.get(crypto.DIR_B2K, 0)
            msg = frames.seal_frame(self.keys, crypto.DIR_B2K, seq, inner)
            self._send_seq[crypto.DIR_B2K] = seq + 1
        return msg

    def open(self, msg: object) -> dict[str, Any]:
        assert self.keys is not None, "handshake not done"
        seq, ct = protocol.parse_sealed(msg)
        with self._lock:
            self._expect(crypto.DIR_K2B, seq)
            plaintext = frames.open_frame(self.keys, crypto.DIR_K2B, seq, ct)
            inner = protocol.decode_inner(plaintext, protocol.K2B_INNER)
            self._recv_seq[crypto.DIR_K2B] = seq + 1
        return inner

    def _expect(self, stream: int, seq: int) -> None:
        expected = self._recv_seq.get(stream, 0)
        if seq != expected:
            code = "replay" if seq < expected else "reorder"
            raise ProtocolError(code, f"frame {seq} (expected {expected})")

    # ---------------------------------------------------------- notebook messages
    def seal_message(self, msg: dict[str, Any], channel: str = "shell") -> dict[str, Any]:
        """Seal a Jupyter request (a ``Session.msg`` dict) in place and return it."""
        assert self.keys is not None, "handshake not done"
        stream = envelope.browser_stream(channel)
        body = envelope.Body(
            msg.get("content") or {},
            msg.get("metadata") or {},
            [bytes(b) for b in msg.get("buffers") or []],
        )
        plaintext = envelope.pack(envelope.request_ids(msg["header"]), body)
        with self._lock:
            seq = self._send_seq.get(stream, 0)
            ct = crypto.seal(
                self.keys.streams[stream], self.keys.session_id, stream, seq, plaintext
            )
            self._send_seq[stream] = seq + 1
        msg["content"] = envelope.envelope_content(self.session_id, seq)
        msg["metadata"] = {}
        msg["buffers"] = [ct]
        return msg

    def is_mine(self, msg: dict[str, Any]) -> bool:
        """Whether ``msg`` is sealed to this session (others' sealed messages are ignored)."""
        env = envelope.envelope_of(msg.get("content"))
        return env is not None and env.sid == self.session_id

    def open_message(self, msg: dict[str, Any], channel: str) -> dict[str, Any]:
        """Open a sealed kernel message in place (strict order per stream) and return it."""
        assert self.keys is not None, "handshake not done"
        env = envelope.envelope_of(msg.get("content"))
        if env is None or env.sid != self.session_id:
            raise ProtocolError("state", "not a message sealed to this session")
        stream = envelope.kernel_stream(channel)
        buffers = msg.get("buffers") or []
        if len(buffers) != 1:
            raise ProtocolError("malformed", "a sealed message carries exactly one buffer")
        expect = envelope.reply_ids(msg["header"], msg.get("parent_header") or {})
        with self._lock:
            self._expect(stream, env.seq)
            plaintext = frames.open_raw(self.keys, stream, env.seq, bytes(buffers[0]))
            body = envelope.unpack(plaintext, expect)
            self._recv_seq[stream] = env.seq + 1
        msg["content"], msg["metadata"], msg["buffers"] = body.content, body.metadata, body.buffers
        return msg
