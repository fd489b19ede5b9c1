"""What the attested broker remembers: single-use nonces, sessions and verdicts.

Kept apart from the HTTP transport and the grant logic so each can be read (and
tested) alone: :class:`NonceBook` bounds what unauthenticated hellos can cost,
:class:`Session` is one attested worker's sealing key, :class:`Attestation` is the
verdict shown in tables and audits.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ppml_kernel import crypto
from ppml_kernel.keys.broker import protocol as P


@dataclass(frozen=True)
class Attestation:
    """The broker's verdict on one executor-side worker process (for tables and tests)."""

    executor: str
    executor_id: str
    host: str
    peer: str
    pid: str
    tee: str
    ok: bool
    verdict: str
    reason: str
    at: float
    verify_ms: float
    measurement: str = ""
    tcb_status: str = ""
    simulated: bool = False
    probe: str = ""


@dataclass
class Session:
    """One attested worker: answers to it are sealed under the key it agreed by ECDH."""

    id: bytes
    aead: crypto.Aead
    executor: str
    expires: float

    def seal(self, kind: str, key_id: str, value: bytes, digest: bytes) -> dict[str, object]:
        """One grant: ``value`` sealed to this session, bound to its kind, key and request."""
        nonce = os.urandom(12)
        sealed = self.aead.encrypt(nonce, value, P.grant_aad(self.id, kind, key_id, digest))
        grant: dict[str, object] = {
            "kind": kind, "key_id": key_id, "nonce": P.b64e(nonce), "sealed": P.b64e(sealed)
        }
        if digest:
            grant["digest"] = P.b64e(digest)
        return grant

    def open_wrap_request(self, item: dict[str, Any]) -> bytes | None:
        """The worker's data key sent for wrapping, or None if it does not authenticate."""
        try:
            return self.aead.decrypt(item["nonce"], item["sealed"],
                                     P.wrap_request_aad(self.id, item["key_id"], item["context"]))
        except crypto.InvalidTag:
            return None


@dataclass
class WorkerClaim:
    """A parsed attest request's worker identity (untrusted labels, cleaned)."""

    executor_id: str
    app_id: str
    host: str
    pid: str
    tee: str
    peer: str
    name: str = field(init=False)

    def __post_init__(self) -> None:
        who = f"executor {self.executor_id}" if self.executor_id else "unknown executor"
        where = self.host or self.peer
        self.name = f"{who} on {where} (pid {self.pid or '?'})"


class NonceBook:
    """Issues nonces and accepts each one once, keeping 1 bit per nonce issued in the last TTL.

    A nonce is ``expiry (8) || counter (8) || HMAC-SHA256(book key, both)[:16]``: the
    broker can check that it issued it, and when it expires, without remembering it.
    Only *use* is recorded, in a bitmap indexed by counter. So a flood of unauthenticated
    hellos costs the broker one MAC each and cannot evict another worker's nonce; the
    bitmap is bounded by :attr:`WINDOW` counters (2 MiB), which a flooder would have to
    request within one TTL before anyone else's nonce were forgotten (then refused,
    never accepted twice).
    """

    WINDOW = 1 << 24
    _BODY = struct.Struct(">QQ")

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._next = 0  # the counter of the next nonce
        self._floor = 0  # counters below it are refused (expired), a multiple of 8
        self._used = bytearray()  # bit i set: counter floor + i was used
        self._groups: deque[list[float]] = deque()  # [first counter, latest expiry], ~1 s each

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:16]

    def issue(self, now: float) -> bytes:
        expires = now + self.ttl
        with self._lock:
            self._advance(now)
            counter = self._next
            self._next += 1
            if not self._groups or self._groups[-1][1] < expires - 1.0:
                self._groups.append([counter, expires])
            else:
                self._groups[-1][1] = expires
            if self._next - self._floor > self.WINDOW:  # only under an absurd flood
                self._move_floor(self._next - self.WINDOW)
        body = self._BODY.pack(int(expires * 1000), counter)
        return body + self._tag(body)

    def take(self, nonce: bytes, now: float) -> bool:
        """True exactly once for a nonce this book issued and that has not expired."""
        if len(nonce) != P.NONCE_SIZE:
            return False
        body, tag = nonce[:16], nonce[16:]
        if not hmac.compare_digest(tag, self._tag(body)):
            return False
        expires_ms, counter = self._BODY.unpack(body)
        if expires_ms < now * 1000:
            return False
        with self._lock:
            self._advance(now)
            if not self._floor <= counter < self._next:
                return False
            index, bit = divmod(counter - self._floor, 8)
            if index >= len(self._used):
                self._used.extend(bytes(index + 1 - len(self._used)))
            if self._used[index] >> bit & 1:
                return False
            self._used[index] |= 1 << bit
            return True

    def _advance(self, now: float) -> None:
        """Forget the bits of counters that have all expired."""
        while self._groups and self._groups[0][1] < now:
            self._groups.popleft()
        self._move_floor(int(self._groups[0][0]) if self._groups else self._next)

    def _move_floor(self, counter: int) -> None:
        counter -= counter % 8
        if counter > self._floor:
            del self._used[: (counter - self._floor) // 8]
            self._floor = counter




def worker_claim(value: object, peer: str) -> WorkerClaim:
    """The worker's own labels from an attest request, cleaned (never trusted for decisions)."""
    data = value if isinstance(value, dict) else {}
    return WorkerClaim(
        executor_id=P.clean_text(data.get("executor_id"), 32),
        app_id=P.clean_text(data.get("app_id"), 64),
        host=P.clean_text(data.get("host"), 64),
        pid=P.clean_text(data.get("pid"), 12),
        tee=P.clean_text(data.get("tee"), 32),
        peer=peer,
    )
