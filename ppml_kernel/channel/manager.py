"""All channel sessions of one kernel, its owners, and the blocking secret request.

Transport-agnostic: the Jupyter wiring (``channel.jupyter``) hands in each session's
``send`` (and ``close``) callables and feeds received messages in. Messages may arrive
on the control thread while a cell blocks the main thread in :meth:`ChannelManager.request_secret`;
the two meet through a lock and a :class:`threading.Event`.

Creating a manager is cheap: :mod:`ppml_kernel.channel.session` (and with it
``cryptography``) is imported on the first ``hello``, so an idle kernel never loads it.
"""

from __future__ import annotations

import logging
import secrets as _pyrandom
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ppml_kernel.channel import protocol
from ppml_kernel.channel.errors import AttestedChannelError
from ppml_kernel.channel.protocol import ProtocolError
from ppml_kernel.tee.base import Attester

if TYPE_CHECKING:
    from ppml_kernel.channel.owners import OwnerRegistry
    from ppml_kernel.channel.session import CollateralProvider, ServerSession

log = logging.getLogger("ppml_kernel.channel")

Send = Callable[[dict[str, Any]], None]
Close = Callable[[], None]
SecretSink = Callable[[str, str, str], None]  # (name, value, source) -> None
ModeProvider = Callable[[], dict[str, Any]]
MAX_CONCURRENT_HANDSHAKES = 4

NO_SESSION_HELP = (
    "no browser has verified this kernel's enclave yet, so no secret can be sent safely. "
    "Open the notebook in JupyterLab (or Notebook 7) with the jupyterlab-ppml extension "
    "installed and wait for its status bar item to show 'verified' (or 'SIMULATED')"
)


class ChannelError(AttestedChannelError, RuntimeError):
    """A secret could not be obtained; the message says why (never the secret)."""


class NoVerifiedSession(ChannelError):
    pass


class SecretTimeout(ChannelError):
    pass


class SecretDeclined(ChannelError):
    pass


_load_lock = threading.Lock()


def _session_class() -> type[ServerSession]:
    """:class:`ServerSession`, imported on first use (it loads ``cryptography``).

    Called from handshake workers and the shell thread alike; the lock makes the
    first import happen once, and a failed import is retried by the next handshake.
    """
    with _load_lock:
        from ppml_kernel.channel.session import ServerSession

    return ServerSession


def _owner_registry() -> OwnerRegistry:
    with _load_lock:
        from ppml_kernel.channel.owners import OwnerRegistry

    return OwnerRegistry()


@dataclass
class _Pending:
    request_id: str
    name: str
    event: threading.Event = field(default_factory=threading.Event)
    value: str | None = field(default=None, repr=False)  # the secret: never in a repr
    declined: str | None = None
    answered_by: str | None = None


class ChannelManager:
    """Sessions keyed by transport ref (comm id), plus pending secret requests."""

    def __init__(
        self,
        attester: Attester | Callable[[], Attester],
        collateral_provider: CollateralProvider | None = None,
        secret_sink: SecretSink | None = None,
        kernel_info: dict[str, Any] | None = None,
        max_sessions: int = 8,
        secret_exists: Callable[[str], bool] | None = None,
    ) -> None:
        self._attester_or_factory = attester
        self._attester: Attester | None = attester if isinstance(attester, Attester) else None
        self.collateral_provider = collateral_provider
        self.secret_sink = secret_sink
        self.kernel_info = kernel_info or {}
        self.max_sessions = max_sessions
        self.secret_exists = secret_exists or (lambda name: False)
        self._sessions: OrderedDict[str, tuple[ServerSession, Send]] = OrderedDict()
        self._closers: dict[str, Close] = {}
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.RLock()
        self._owners: OwnerRegistry | None = None
        self._handshakes = threading.BoundedSemaphore(MAX_CONCURRENT_HANDSHAKES)
        self.mode_provider: ModeProvider = lambda: {"on": False, "required": False, "reason": ""}
        self.on_change: Callable[[], None] = lambda: None  # a secret was stored
        self.errors: list[str] = []  # recent rejected frames (for %ppml status), no secrets

    # ----------------------------------------------------------------- sessions
    def attester(self) -> Attester:
        if self._attester is None:
            factory = self._attester_or_factory
            assert callable(factory)
            self._attester = factory()
        return self._attester

    def owners(self) -> OwnerRegistry:
        """The kernel's owner keys (created with the first handshake)."""
        with self._lock:
            if self._owners is None:
                self._owners = _owner_registry()
            return self._owners

    def on_open(self, ref: str, data: object, send: Send, close: Close | None = None) -> None:
        """A browser said ``hello`` on a new comm: answer with evidence or an error.

        Runs on a worker thread (a quote and a collateral download can take seconds);
        at most a few run at once, the rest are told the kernel is busy.
        """
        if not self._handshakes.acquire(blocking=False):
            self._reject(send, "busy", "too many handshakes at once; try again")
            self._close_transport(close)
            return
        try:
            self._handshake(ref, data, send, close)
        finally:
            self._handshakes.release()

    def _handshake(self, ref: str, data: object, send: Send, close: Close | None) -> None:
        try:
            session = _session_class()(ref, self.owners())
        # boundary: importing the session's crypto (``cryptography``'s native code) can
        # fail in many ways; the browser hears why and the kernel stays alive
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            log.warning("the attested channel is unavailable: %s", why)
            self._reject(send, "attester", f"the kernel cannot load its channel crypto ({why})")
            self._close_transport(close)
            return
        try:
            evidence = session.handshake(
                data, self.attester(), self.collateral_provider, self.kernel_info
            )
        except ProtocolError as exc:
            self._reject(send, exc.code, str(exc))
            self._close_transport(close)
            return
        # boundary: the attester is a plugin (entry point) talking to a device; whatever
        # it raises is reported to the browser, and the kernel stays alive
        except Exception as exc:
            log.warning("attestation failed: %s", exc)
            self._reject(send, "attester", f"the enclave could not produce a quote: {exc}")
            self._close_transport(close)
            return
        evicted: list[tuple[ServerSession, Close | None]] = []
        with self._lock:
            self._sessions[ref] = (session, send)
            if close is not None:
                self._closers[ref] = close
            while len(self._sessions) > self.max_sessions:
                # A flood of hellos must not push owners' sessions out: the oldest
                # session that is not ready goes first, a ready one only if all are.
                old_ref = next(
                    (r for r, (s, _) in self._sessions.items() if not s.ready and r != ref),
                    next(iter(self._sessions)),
                )
                old, _ = self._sessions.pop(old_ref)
                evicted.append((old, self._closers.pop(old_ref, None)))
        for old, old_close in evicted:
            old.close()
            self._close_transport(old_close)
        send(evidence)

    @staticmethod
    def _close_transport(close: Close | None) -> None:
        """Release the comm of a failed or evicted session (memory stays bounded)."""
        if close is None:
            return
        try:
            close()
        except Exception:  # boundary: cleanup through the transport's own callback
            log.debug("could not close a channel comm", exc_info=True)

    def _drop(self, ref: str) -> None:
        with self._lock:
            entry = self._sessions.pop(ref, None)
            close = self._closers.pop(ref, None)
        if entry is not None:
            entry[0].close()
        self._close_transport(close)

    def on_message(self, ref: str, data: object) -> None:
        """A comm message from the browser (any thread)."""
        with self._lock:
            entry = self._sessions.get(ref)
        if entry is None:
            log.warning("channel message for unknown session %s", ref)
            return
        session, send = entry
        try:
            kind = protocol.require_type(data, frozenset({protocol.SEALED, protocol.ABORT}))
            if kind == protocol.ABORT:
                assert isinstance(data, dict)
                reason = str(data.get("reason", ""))[:500]
                session.abort_reason = reason or "no reason given"
                session.close()
                log.warning("browser rejected the enclave: %s", session.abort_reason)
                return
            inner = session.open(data)
            self._dispatch(session, send, inner)
        except ProtocolError as exc:
            seq = data.get("seq") if isinstance(data, dict) else None
            self._reject(send, exc.code, str(exc), seq if isinstance(seq, int) else None)
            if exc.code == "not_owner":
                log.warning("refused a session that is not the kernel owner's")
                self._drop(ref)

    def on_close(self, ref: str) -> None:
        with self._lock:
            entry = self._sessions.pop(ref, None)
            self._closers.pop(ref, None)
        if entry:
            entry[0].close()

    def _reject(self, send: Send, code: str, message: str, seq: int | None = None) -> None:
        with self._lock:
            self.errors = [*self.errors[-19:], f"{code}: {message}"]
        try:
            send(protocol.error_message(code, message, seq))
        except Exception:  # boundary: the transport's callback; it is gone, nothing to tell
            log.debug("could not send channel error", exc_info=True)

    def _dispatch(self, session: ServerSession, send: Send, inner: dict[str, Any]) -> None:
        """Act on a frame that :meth:`ServerSession.open` fully validated."""
        kind = inner["type"]
        if kind == protocol.FINISHED:
            send(session.seal(self._ready_message(session)))
            if session.claimed:
                log.warning("kernel claimed by owner %s", session.owner_fingerprint)
        elif kind == protocol.SECRET:
            self._on_secret(session, send, inner)
        elif kind == protocol.OWNER_GRANT:
            self._on_grant(session, send, inner)
        elif kind == protocol.SECRET_DECLINE:
            request_id, reason = protocol.parse_secret_decline(inner)
            with self._lock:
                pending = self._pending.get(request_id or "")
            if pending is not None and not pending.event.is_set():
                pending.declined = reason
                pending.answered_by = session.ref
                pending.event.set()

    def _ready_message(self, session: ServerSession) -> dict[str, Any]:
        return {
            "type": protocol.READY,
            "session_id": session.session_id,
            "owners": self.owners().describe(),
            "claimed": session.claimed,
            "sealed_mode": self.mode_provider(),
        }

    def _on_grant(self, session: ServerSession, send: Send, inner: dict[str, Any]) -> None:
        from ppml_kernel.channel import crypto

        new_owner, label, sig = protocol.parse_owner_grant(inner)
        result: dict[str, Any] = {"type": protocol.OWNER_RESULT, "ok": True}
        try:
            crypto.check_public_key(new_owner, "owner_pub")
            crypto.verify_grant(
                session.owner_pub, sig, bytes.fromhex(session.session_id), new_owner
            )
            added = self.owners().grant(session.owner_pub, new_owner, label)
            if not added:
                result["message"] = "that key is already an owner"
            log.warning(
                "owner %s granted access to %s (%s)",
                session.owner_fingerprint,
                crypto.owner_fingerprint(new_owner),
                label,
            )
        except (crypto.ChannelCryptoError, ProtocolError) as exc:
            result.update(ok=False, message=str(exc))
        result["owners"] = self.owners().describe()
        send(session.seal(result))

    def broadcast_mode(self) -> None:
        """Tell every ready session that sealed mode changed."""
        message = {"type": protocol.MODE, "sealed_mode": self.mode_provider()}
        for session, send in self._ready_targets():
            try:
                send(session.seal(message))
            except Exception:  # boundary: one dead transport must not stop the broadcast
                log.debug("could not send mode change", exc_info=True)

    def _on_secret(self, session: ServerSession, send: Send, inner: dict[str, Any]) -> None:
        request_id, name, value, replace = protocol.parse_secret(inner)
        result: dict[str, Any] = {
            "type": protocol.SECRET_RESULT,
            "request_id": request_id,
            "name": name,
            "ok": True,
        }
        if request_id is not None:
            with self._lock:
                pending = self._pending.get(request_id)
            if pending is None or pending.event.is_set():
                result.update(ok=False, message="this request is no longer pending")
            elif pending.name != name:
                result.update(
                    ok=False, message=f"the kernel asked for {pending.name!r}, not {name!r}"
                )
            else:
                pending.value = value
                pending.answered_by = session.ref
                pending.event.set()
        elif self.secret_sink is None:
            result.update(ok=False, message="this kernel does not accept unsolicited secrets")
        elif not replace and self.secret_exists(name):
            result.update(
                ok=False,
                message=f"the kernel already holds a secret {name!r}; send it again with "
                "'replace' to overwrite it",
            )
        else:
            try:
                self.secret_sink(name, value, "browser")
            except Exception as exc:  # boundary: the sink is a callback; answer, name no value
                result.update(
                    ok=False, message=f"could not store secret {name!r}: {type(exc).__name__}"
                )
        del value
        send(session.seal(result))
        if result["ok"] and request_id is None:
            self.on_change()

    # ----------------------------------------------------------------- queries
    def has_session(self, ref: str) -> bool:
        with self._lock:
            return ref in self._sessions

    def session_by_sid(self, sid: str) -> ServerSession | None:
        """The ready session whose id is ``sid`` (hex), if any."""
        with self._lock:
            for session, _ in self._sessions.values():
                if session.ready and session.session_id == sid:
                    return session
        return None

    def last_ready(self) -> ServerSession | None:
        with self._lock:
            for session, _ in reversed(self._sessions.values()):
                if session.ready:
                    return session
        return None

    def ready_sessions(self) -> list[ServerSession]:
        return [s for s, _ in self._ready_targets()]

    def status(self) -> dict[str, Any]:
        with self._lock:
            owners = self._owners.describe() if self._owners is not None else []
            return {
                "sessions": [s.describe() for s, _ in self._sessions.values()],
                "owners": owners,
                "pending": [p.name for p in self._pending.values()],
                "errors": list(self.errors),
            }

    # ----------------------------------------------------------------- secrets
    def request_secret(
        self,
        name: str,
        prompt: str | None = None,
        timeout: float = 300.0,
        poll: float = 0.1,
    ) -> str:
        """Ask every verified browser for ``name`` and block until one answers.

        Raises :class:`NoVerifiedSession`, :class:`SecretTimeout` or
        :class:`SecretDeclined`; ``KeyboardInterrupt`` (kernel interrupt) cancels the
        prompt in the browsers and propagates.
        """
        return self.request_secret_from(name, prompt, timeout, poll)[0]

    def request_secret_from(
        self,
        name: str,
        prompt: str | None = None,
        timeout: float = 300.0,
        poll: float = 0.1,
    ) -> tuple[str, dict[str, Any]]:
        """Like :meth:`request_secret`; also returns the answering browser's verdict."""
        protocol.check_name(name)
        targets = self._ready_targets()
        if not targets:
            raise NoVerifiedSession(self._why_no_session())
        pending = _Pending(request_id=_pyrandom.token_hex(8), name=name)
        request = {
            "type": protocol.SECRET_REQUEST,
            "request_id": pending.request_id,
            "name": name,
            "prompt": prompt or f"Enter the secret {name!r}",
            "timeout_s": timeout,
        }
        reason = "answered"
        # Everything from registering the request on runs under the ``finally``: an
        # interrupt that lands while the requests go out must still withdraw them.
        try:
            with self._lock:
                self._pending[pending.request_id] = pending
            sent = 0
            for session, send in targets:
                try:
                    send(session.seal(request))
                    sent += 1
                except Exception:  # boundary: a dead transport; the other sessions still ask
                    log.debug("could not send secret request", exc_info=True)
            if not sent:
                reason = "the request could not be sent"
                raise NoVerifiedSession(self._why_no_session())
            deadline = time.monotonic() + timeout
            while not pending.event.wait(poll):
                if time.monotonic() >= deadline:
                    reason = "timed out"
                    raise SecretTimeout(
                        f"no secret {name!r} arrived within {timeout:g} s; run the cell again "
                        "or send it with the command 'PPML: Send a secret to the kernel'"
                    )
        except KeyboardInterrupt:
            reason = "the cell was interrupted"
            raise
        finally:
            with self._lock:
                self._pending.pop(pending.request_id, None)
            self._cancel_others(pending, targets, reason)
        if pending.declined is not None:
            raise SecretDeclined(f"the secret {name!r} was not entered: {pending.declined}")
        assert pending.value is not None
        verdict: dict[str, Any] = {}
        with self._lock:
            entry = self._sessions.get(pending.answered_by or "")
        if entry is not None:
            verdict = dict(entry[0].verdict)
        return pending.value, verdict

    def _why_no_session(self) -> str:
        with self._lock:
            reasons = [s.abort_reason for s, _ in self._sessions.values() if s.abort_reason]
        if reasons:
            return (
                f"the browser rejected this kernel's enclave ({reasons[-1]}), so it will not "
                "send secrets; see the PPML status bar item for the full report"
            )
        return NO_SESSION_HELP

    def _ready_targets(self) -> list[tuple[ServerSession, Send]]:
        with self._lock:
            return [(s, send) for s, send in self._sessions.values() if s.ready]

    def _cancel_others(
        self, pending: _Pending, targets: list[tuple[ServerSession, Send]], reason: str
    ) -> None:
        for session, send in targets:
            if session.ref == pending.answered_by or not session.ready:
                continue
            cancel = {
                "type": protocol.SECRET_CANCEL,
                "request_id": pending.request_id,
                "reason": "answered in another window" if pending.answered_by else reason,
            }
            try:
                send(session.seal(cancel))
            except Exception:  # boundary: best-effort cancel through a transport callback
                log.debug("could not cancel secret request", exc_info=True)
