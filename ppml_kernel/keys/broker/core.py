"""The broker's core, without a transport: what is granted, what is refused, the audit.

A worker that the transport has authenticated (a peer-checked Unix socket, or an
attested HTTP session) asks for KEKs by id, for files' data keys to be unwrapped, or
for new data keys to be wrapped. :class:`KeyGrants` answers each request from the
driver's keys (KEKs never leave them except as a ``kek`` grant to an attested
session), records every grant and refusal in the
:class:`~ppml_kernel.keys.broker.audit.AuditLog`, and leaves how an answer travels
to the transport: sealed to an attested session (:class:`GrantSealer`), or plain over
the peer-checked local socket (:func:`audited`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ppml_kernel.keys.broker import protocol as P
from ppml_kernel.keys.broker.audit import GRANT, REFUSE, AuditEvent, AuditLog
from ppml_kernel.keys.wrap import WrappedKey, unwrap_with_kek, wrap_with_kek

Unwrapper = Callable[[str, WrappedKey, bytes], bytes]
Wrapper = Callable[[str, bytes, bytes], WrappedKey]
T = TypeVar("T")


class KeySource(Protocol):
    """Where the broker finds keys by id (:class:`~ppml_kernel.keys.store.KeyStore`)."""

    def get(self, name: str) -> bytes | None: ...


class GrantSealer(Protocol):
    """One authenticated worker's session: seals answers to it, opens its wrap requests."""

    id: bytes
    executor: str

    def seal(self, kind: str, key_id: str, value: bytes, digest: bytes) -> dict[str, object]: ...

    def open_wrap_request(self, item: dict[str, Any]) -> bytes | None: ...


def _kek(keys: KeySource, key_id: str) -> bytes:
    kek = keys.get(key_id)
    if kek is None:
        raise LookupError(f"no key with key id {key_id!r} in the driver")
    return kek


def store_unwrapper(keys: KeySource) -> Unwrapper:
    """Open a file's wrapped data key with the KEK held here (the KEK never leaves)."""

    def unwrap(key_id: str, wrapped: WrappedKey, context: bytes) -> bytes:
        return unwrap_with_kek(_kek(keys, key_id), key_id, wrapped, context)

    return unwrap


def store_wrapper(keys: KeySource) -> Wrapper:
    """Seal a writer's new data key under the KEK held here (the KEK never leaves)."""

    def wrap(key_id: str, data_key: bytes, context: bytes) -> WrappedKey:
        return wrap_with_kek(_kek(keys, key_id), key_id, data_key, context)

    return wrap


def safe_error(exc: BaseException) -> str:
    """An error for a refusal: our own exception types carry safe messages; others only a name."""
    if isinstance(exc, LookupError):
        return str(exc.args[0]) if exc.args else "not found"
    module = type(exc).__module__
    if module.startswith("ppml_kernel."):
        return P.clean_text(f"{type(exc).__name__}: {exc}", 300)
    return f"{type(exc).__name__} while unwrapping"


def audited(audit: AuditLog, who: str, peer: str, kind: str, key_id: str,
            action: Callable[[], T]) -> T:
    """Run one request for ``key_id`` and audit it as granted, or refused (re-raised)."""
    try:
        value = action()
    except Exception as exc:
        audit.record(AuditEvent(time.time(), REFUSE, who, peer, False,
                                reason=safe_error(exc), key_ids=(key_id,)))
        raise
    audit.record(AuditEvent(time.time(), GRANT, who, peer, True, reason=kind,
                            key_ids=(key_id,)))
    return value


class KeyGrants:
    """Answers one authenticated worker's key requests and audits every answer."""

    def __init__(self, keys: KeySource, audit: AuditLog, *, unwrapper: Unwrapper | None = None,
                 wrapper: Wrapper | None = None) -> None:
        self.keys = keys
        self.audit = audit
        self.unwrapper = unwrapper or store_unwrapper(keys)
        self.wrapper = wrapper or store_wrapper(keys)

    def grant(self, session: GrantSealer, peer: str, kek_ids: list[str],
              unwraps: list[dict[str, Any]], wraps: list[dict[str, Any]] | None = None
              ) -> tuple[list[dict], list[dict]]:
        """Sealed grants and refusals (with reasons) for these requests, all audited."""
        grants: list[dict[str, object]] = []
        refused: list[dict[str, object]] = []
        for key_id in kek_ids:
            value = self.keys.get(key_id)
            if value is None:
                refused.append({"kind": P.KIND_KEK, "key_id": key_id,
                                "reason": f"no key with key id {key_id!r} in the driver"})
                continue
            grants.append(session.seal(P.KIND_KEK, key_id, bytes(value), b""))
        for item in unwraps:
            key_id = item["key_id"]
            try:
                data_key = self.unwrapper(key_id, item["wrapped"], item["context"])
            # boundary: the unwrapper is any KeyProvider (a KMS plugin); refuse and audit,
            # our key errors name the key, not its bytes
            except Exception as exc:
                refused.append({"kind": P.KIND_UNWRAP, "key_id": key_id,
                                "reason": safe_error(exc)})
                continue
            grants.append(session.seal(P.KIND_UNWRAP, key_id, data_key, item["digest"]))
        for item in wraps or []:
            grant, reason = self._wrap_one(session, item)
            if grant is not None:
                grants.append(grant)
            else:
                refused.append({"kind": P.KIND_WRAP, "key_id": item["key_id"], "reason": reason})
        self._audit(session, peer, grants, refused)
        return grants, refused

    def _wrap_one(self, session: GrantSealer, item: dict[str, Any]) -> tuple[dict | None, str]:
        key_id, context = item["key_id"], item["context"]
        data_key = session.open_wrap_request(item)
        if data_key is None:
            return None, "the data key to wrap does not authenticate under this session"
        try:
            wrapped = self.wrapper(key_id, data_key, context)
        # boundary: the wrapper is any KeyProvider (a KMS plugin); our key errors name the
        # key, not its bytes
        except Exception as exc:
            return None, safe_error(exc)
        value = P.pack_wrapped(bytes(wrapped.key_check), bytes(wrapped.nonce),
                               bytes(wrapped.ciphertext))
        return session.seal(P.KIND_WRAP, key_id, value, item["digest"]), ""

    def _audit(self, session: GrantSealer, peer: str, grants: list[dict],
               refused: list[dict]) -> None:
        tag = session.id.hex()[:8]
        if grants:
            self.audit.record(
                AuditEvent(time.time(), GRANT, session.executor, peer, True,
                           reason=", ".join(sorted({str(g["kind"]) for g in grants})),
                           key_ids=tuple(str(g["key_id"]) for g in grants), session=tag)
            )
        for item in refused:
            self.audit.record(
                AuditEvent(time.time(), REFUSE, session.executor, peer, False,
                           reason=str(item["reason"]), key_ids=(str(item["key_id"]),),
                           session=tag)
            )
