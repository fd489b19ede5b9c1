"""The kernel's sealing gate: sealed requests in, sealed replies and output out.

Everything a verified owner's browser sends that can run code or read kernel state
arrives sealed to its ``ppml-attest/2`` session (docs/protocol.md, 6); everything the
kernel sends *because of* such a request leaves sealed to the same session. The gate
sits at the messaging layer, so a user's ``print``, a pandas HTML table, a matplotlib
PNG, a widget's state and a traceback are covered without special cases:

* in: :meth:`SealingGate.admit` runs for every shell message before ipykernel decides
  anything about it (``PPMLKernel.should_handle`` and the abort path), opens sealed
  bodies in place and refuses unsealed requests in sealed mode, with an error reply
  that says why and never executes them;
* early opening: ipykernel 7 receives shell messages on its shell-channel thread, in
  the order they arrive, and queues them for the main thread, which is busy for as long
  as a cell runs. :meth:`SealingGate.preopen` opens sealed shell frames there, on
  arrival (stream ``b2k shell`` is numbered in that order), so that a sealed widget
  click (a Cancel button) can act while its cell runs. The outcome (the opened body,
  or the reason the frame was rejected) is kept for the main thread under a digest of
  the exact frames it was read from, where :meth:`admit` takes it instead of opening
  the frame a second time; only byte-identical frames share a digest. A frame that was
  not opened early (no shell-channel thread, or an outcome evicted under a flood) is
  opened in place as before, which for a number already used fails closed (replay);
* out: :meth:`SealingGate.send` wraps the kernel's ``Session.send`` (one object shared
  by the shell, IOPub and stdin paths and the output streams), sealing by the parent
  request; a message whose session is gone is dropped, never sent in the clear.

Sealed mode is sticky: once on (a real TEE, ``PPML_SEALED=required``, or the kernel
holds a secret or a dataset key) it stays on for the life of the process.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
import sys
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jupyter_client.session import extract_header

from ppml_kernel.channel.protocol import (
    CLEAR_FROM_KERNEL,
    CLEAR_REQUESTS,
    SEALED_KEY,
    TARGET_NAME,
    ProtocolError,
)

if TYPE_CHECKING:
    from ppml_kernel.channel.manager import ChannelManager
    from ppml_kernel.channel.session import ServerSession

log = logging.getLogger("ppml_kernel.sealing")

SEALED_ENV = "PPML_SEALED"  # "required" | "auto" (default)
REFUSED_ENAME = "PPMLSealedSessionRequired"
REJECTED_ENAME = "PPMLSealedFrameRejected"
REFUSAL_HELP = (
    "this PPML kernel is in sealed mode: it runs only requests sealed by a verified owner's "
    "browser. Open the notebook in JupyterLab with the PPML extension (jupyterlab-ppml), or "
    "run it with `ppml-kernel run NOTEBOOK.ipynb` (the sealed headless client)"
)
# Control-channel requests a sealed kernel still answers in the clear.
CONTROL_CLEAR = frozenset(
    {
        "kernel_info_request",
        "shutdown_request",
        "interrupt_request",
        "usage_request",
        "create_subshell_request",
        "delete_subshell_request",
        "list_subshell_request",
    }
)
# Kernel output that belongs to the conversation even without a known parent.
_OUTPUT = frozenset(
    {
        "stream",
        "display_data",
        "update_display_data",
        "execute_result",
        "execute_input",
        "error",
        "clear_output",
        "comm_open",
        "comm_msg",
        "comm_close",
    }
)
MAX_PARENTS = 4096
MAX_PREOPENED = 4096  # outcomes waiting for the main thread (each is a queued message)
_SEALED_MARK = SEALED_KEY.encode()
# The digest of the raw frames of the shell message the current thread is handling.
_FRAMES_DIGEST: contextvars.ContextVar[bytes | None] = contextvars.ContextVar(
    "ppml_frames_digest", default=None
)


def _envelope() -> Any:
    """``channel.envelope`` (and ``cryptography``), imported with the first sealed message."""
    from ppml_kernel.channel import envelope

    return envelope


def _is_sealed(content: object) -> bool:
    return isinstance(content, dict) and SEALED_KEY in content


def _reply_type(msg_type: str) -> str | None:
    return msg_type.rsplit("_", 1)[0] + "_reply" if msg_type.endswith("_request") else None


def _buffer_bytes(buffer: Any) -> bytes:
    return bytes(getattr(buffer, "buffer", buffer))


def frames_digest(frames: Sequence[Any]) -> bytes:
    """SHA-256 of a raw multipart message (routing ids included), length-prefixed."""
    h = hashlib.sha256()
    for frame in frames:
        data = getattr(frame, "bytes", None)
        data = bytes(data if data is not None else _buffer_bytes(frame))
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.digest()


@contextlib.contextmanager
def handling(frames: Sequence[Any]) -> Iterator[None]:
    """Mark ``frames`` as the raw message this thread (or task) is now dispatching."""
    token = _FRAMES_DIGEST.set(frames_digest(frames))
    try:
        yield
    finally:
        _FRAMES_DIGEST.reset(token)


@dataclass
class Opened:
    """A sealed shell frame opened on arrival: what the main thread applies."""

    content: dict[str, Any]
    metadata: dict[str, Any]
    buffers: list[bytes]


class SealingGate:
    """Per-kernel state of the sealed conversation (thread-safe)."""

    def __init__(
        self,
        kernel: Any,
        manager: ChannelManager,
        *,
        required: bool,
        holds_secrets: Callable[[], bool],
    ) -> None:
        self.kernel = kernel
        self.manager = manager
        self.required = required
        self._holds_secrets = holds_secrets
        self._on = required
        self._reason = "required from start" if required else ""
        self._parents: OrderedDict[str, ServerSession] = OrderedDict()
        self._last: ServerSession | None = None
        self._lock = threading.Lock()
        self._preopened: OrderedDict[bytes, deque[Opened | ProtocolError]] = OrderedDict()
        self._preopened_count = 0
        self.refused: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.sealed_in = 0
        self.sealed_out = 0
        self.dropped = 0
        self._send = kernel.session.send
        manager.mode_provider = self.mode
        manager.on_change = self.refresh

    # ---------------------------------------------------------------- mode
    @property
    def on(self) -> bool:
        if not self._on:
            self.refresh()
        return self._on

    def refresh(self) -> None:
        """Turn sealed mode on if the kernel now holds a secret or a dataset key."""
        if self._on:
            return
        try:
            holds = self._holds_secrets()
        except Exception:  # boundary: a broken store must not open the gate: fail closed
            log.warning("could not check the kernel's secrets; sealing", exc_info=True)
            holds = True
        if holds:
            with self._lock:
                turned_on = not self._on
                self._on = True
                self._reason = "the kernel holds a secret or a dataset key"
            if turned_on:
                log.warning("sealed mode is on: %s", self._reason)
                self.manager.broadcast_mode()

    def mode(self) -> dict[str, Any]:
        on = self.on
        return {"on": on, "required": self.required, "reason": self._reason if on else ""}

    def status(self) -> dict[str, Any]:
        """What ``%ppml status`` shows (counts, never content)."""
        return {
            **self.mode(),
            "sealed_requests": self.sealed_in,
            "sealed_messages_out": self.sealed_out,
            "refused": dict(self.refused),
            "rejected": dict(self.rejected),
            "dropped": self.dropped,
        }

    # ---------------------------------------------------------------- in
    def _is_channel_comm(self, msg: dict[str, Any]) -> bool:
        """The attestation comm protects itself; it must pass unsealed."""
        msg_type = msg["header"].get("msg_type")
        content = msg.get("content") or {}
        if msg_type == "comm_open":
            return content.get("target_name") == TARGET_NAME
        if msg_type in ("comm_msg", "comm_close"):
            return self.manager.has_session(str(content.get("comm_id")))
        return False

    def admit(self, stream: Any, idents: list[bytes], msg: dict[str, Any]) -> bool:
        """Open a sealed request in place, or decide an unsealed one.

        Returns False (after answering it) for a request that must not run.
        """
        msg_type = msg["header"].get("msg_type", "")
        if not _is_sealed(msg.get("content")):
            if msg_type in CLEAR_REQUESTS or self._is_channel_comm(msg) or not self.on:
                return True
            self._refuse(stream, idents, msg)
            return False
        try:
            self._open_or_take(msg)
        except ProtocolError as exc:
            self._reject(stream, idents, msg, exc)
            return False
        return True

    def consume(self, msg: dict[str, Any]) -> None:
        """Open a sealed request that ipykernel aborts anyway, so its number is used."""
        if not _is_sealed(msg.get("content")):
            return
        try:
            self._open_or_take(msg)
        except ProtocolError as exc:
            self.rejected[exc.code] += 1

    def _open_or_take(self, msg: dict[str, Any]) -> None:
        """Apply the outcome of opening ``msg`` on arrival, or open it now."""
        outcome = self._take_preopened()
        if outcome is None:
            self._open(msg, _envelope().envelope_of(msg.get("content")), "shell")
            return
        if isinstance(outcome, ProtocolError):
            raise outcome
        msg["content"], msg["metadata"], msg["buffers"] = (
            outcome.content, outcome.metadata, outcome.buffers)

    # ------------------------------------------------- opening on arrival
    def preopen(
        self,
        frames: Sequence[Any],
        session: Any,
        routable: Callable[[dict[str, Any]], bool] = lambda _header: True,
    ) -> dict[str, Any] | None:
        """On the shell-channel thread: open a sealed shell frame as it arrives.

        ``frames`` is the raw multipart message, forwarded unchanged to the thread that
        handles it; ``session`` the kernel's ``jupyter_client`` Session; ``routable``
        says whether ipykernel will forward a message with this header (an unknown
        subshell is answered and dropped there: such a frame is left unopened, so it
        uses no number). Returns the opened message (for routing a sealed comm
        message), or None when the frame is not sealed, is not a valid Jupyter message
        (ipykernel drops it too) or failed to open (its rejection is answered by the
        main thread, in turn, as before).
        """
        try:
            _idents, rest = session.feed_identities(list(frames), copy=False)
            # Checks the HMAC signature (and a duplicate one) without recording it: the
            # main thread's full deserialisation records it, as without early opening.
            msg = session.deserialize(rest, content=False, copy=False)
            if not routable(msg["header"]):
                return None
            raw = msg["content"]
            if _SEALED_MARK not in bytes(raw):
                return None
            msg["content"] = session.unpack(raw)
        # best-effort: untrusted frames; the main thread's full deserialisation decides
        # and records what is wrong with them
        except Exception:
            return None
        if not _is_sealed(msg["content"]):
            return None
        digest = frames_digest(frames)
        outcome: Opened | ProtocolError
        try:
            env = _envelope().envelope_of(msg.get("content"))
            self._open(msg, env, "shell")
            outcome = Opened(msg["content"], msg["metadata"], msg["buffers"])
        except ProtocolError as exc:
            outcome = exc
        with self._lock:
            self._preopened.setdefault(digest, deque()).append(outcome)
            self._preopened.move_to_end(digest)
            self._preopened_count += 1
            while self._preopened_count > MAX_PREOPENED:
                _, evicted = self._preopened.popitem(last=False)
                self._preopened_count -= len(evicted)
        return msg if isinstance(outcome, Opened) else None

    def _take_preopened(self) -> Opened | ProtocolError | None:
        """The outcome kept for the frames this thread is handling, if any (once)."""
        digest = _FRAMES_DIGEST.get()
        if digest is None:
            return None
        with self._lock:
            outcomes = self._preopened.get(digest)
            if not outcomes:
                return None
            outcome = outcomes.popleft()
            self._preopened_count -= 1
            if not outcomes:
                del self._preopened[digest]
        return outcome

    def _open(self, msg: dict[str, Any], env: Any, channel: str) -> ServerSession:
        envelope = _envelope()
        session = self.manager.session_by_sid(env.sid)
        if session is None:
            raise ProtocolError("state", "no verified owner session with this id")
        buffers = msg.get("buffers") or []
        if len(buffers) != 1:
            raise ProtocolError("malformed", "a sealed message carries exactly one buffer")
        expect = envelope.request_ids(msg["header"])
        body = session.open_stream(
            envelope.browser_stream(channel),
            env.seq,
            _buffer_bytes(buffers[0]),
            lambda plaintext: envelope.unpack(plaintext, expect),
        )
        msg["content"], msg["metadata"], msg["buffers"] = body.content, body.metadata, body.buffers
        with self._lock:
            self._parents[msg["header"]["msg_id"]] = session
            while len(self._parents) > MAX_PARENTS:
                self._parents.popitem(last=False)
            self._last = session
            self.sealed_in += 1
        return session

    def input_value(self, reply: dict[str, Any], parent: dict[str, Any]) -> str | None:
        """The value of an ``input_reply``, or None if it must be ignored (keep waiting)."""
        parent_id = (extract_header(parent) or {}).get("msg_id")
        with self._lock:
            sealed_parent = parent_id in self._parents
        if not _is_sealed(reply.get("content")):
            if sealed_parent or self.on:
                self.refused["input_reply"] += 1
                log.warning("ignored an unsealed input_reply (sealed session)")
                return None
            value = (reply.get("content") or {}).get("value", "")
            return value if isinstance(value, str) else ""
        try:
            self._open(reply, _envelope().envelope_of(reply.get("content")), "stdin")
        except ProtocolError as exc:
            self.rejected[exc.code] += 1
            log.warning("ignored a sealed input_reply: %s", exc.code)
            return None
        value = reply["content"].get("value", "")
        return value if isinstance(value, str) else ""

    def _answer(
        self, stream: Any, idents: list[bytes], msg: dict[str, Any], ename: str, text: str
    ) -> None:
        """An error reply in the clear (it carries no content of the request)."""
        reply_type = _reply_type(msg["header"].get("msg_type", ""))
        if reply_type is None:
            return
        content = {
            "status": "error",
            "ename": ename,
            "evalue": text,
            "traceback": [f"{ename}: {text}"],
        }
        if reply_type == "execute_reply":
            content["execution_count"] = None
            self._send(
                self.kernel.iopub_socket,
                "error",
                {"ename": ename, "evalue": text, "traceback": [f"{ename}: {text}"]},
                parent=msg,
                ident=self.kernel._topic("error"),
            )
        self._send(stream, reply_type, content, parent=msg, ident=idents)

    def _refuse(self, stream: Any, idents: list[bytes], msg: dict[str, Any]) -> None:
        msg_type = msg["header"].get("msg_type", "?")
        self.refused[msg_type] += 1
        log.warning("refused an unsealed %s (sealed mode)", msg_type)
        self._answer(stream, idents, msg, REFUSED_ENAME, REFUSAL_HELP)

    def _reject(
        self, stream: Any, idents: list[bytes], msg: dict[str, Any], exc: ProtocolError
    ) -> None:
        self.rejected[exc.code] += 1
        msg_type = msg["header"].get("msg_type", "?")
        log.warning("rejected a sealed %s: %s", msg_type, exc.code)
        self._answer(
            stream, idents, msg, REJECTED_ENAME, f"sealed request rejected ({exc.code}): {exc}"
        )

    def control_guard(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a control handler: in sealed mode only harmless requests pass."""

        def guarded(stream: Any, idents: list[bytes], msg: dict[str, Any]) -> Any:
            msg_type = msg["header"].get("msg_type", "")
            if _is_sealed(msg.get("content")) or (msg_type not in CONTROL_CLEAR and self.on):
                self._refuse(stream, idents, msg)
                return None
            return handler(stream, idents, msg)

        return guarded

    # ---------------------------------------------------------------- out
    def _target(self, msg_type: str, parent_id: str | None, content: Any) -> Any:
        """The session to seal to, None for clear, or False to drop."""
        if msg_type in CLEAR_FROM_KERNEL:
            return None
        if msg_type in ("comm_open", "comm_msg", "comm_close") and isinstance(content, dict):
            comm_id = content.get("comm_id")
            if content.get("target_name") == TARGET_NAME or self.manager.has_session(str(comm_id)):
                return None
        with self._lock:
            session = self._parents.get(parent_id or "")
            last = self._last
        if session is not None:
            return session if session.ready else False
        if msg_type in _OUTPUT and self.on:
            # Output without a sealed parent (a background thread) in a sealed kernel.
            return last if last is not None and last.ready else False
        return None

    def send(
        self,
        stream: Any,
        msg_or_type: Any,
        content: Any = None,
        parent: Any = None,
        ident: Any = None,
        buffers: Any = None,
        track: bool = False,
        header: Any = None,
        metadata: Any = None,
    ) -> Any:
        """``Session.send`` with sealing by parent request (see the module docstring)."""
        session_obj = self.kernel.session
        if isinstance(msg_or_type, dict):
            msg = msg_or_type
            buffers = buffers if buffers is not None else msg.get("buffers", [])
        else:
            msg = session_obj.msg(
                msg_or_type, content=content, parent=parent, header=header, metadata=metadata
            )
        msg_type = msg["header"]["msg_type"]
        parent_id = (msg.get("parent_header") or {}).get("msg_id")
        target = self._target(msg_type, parent_id, msg.get("content"))
        if target is None:
            return self._send(stream, msg, ident=ident, buffers=buffers, track=track)
        if target is False:
            self.dropped += 1
            log.debug("dropped a %s whose session is gone", msg_type)
            return msg
        envelope = _envelope()
        body = envelope.Body(
            msg.get("content") or {},
            msg.get("metadata") or {},
            [_buffer_bytes(b) for b in (buffers or [])],
        )
        plaintext = envelope.pack(envelope.reply_ids(msg["header"], msg["parent_header"]), body)
        stream_id = envelope.kernel_stream(envelope.kernel_channel(msg_type))

        def deliver(seq: int, ct: bytes) -> None:
            sealed = dict(msg)
            sealed["content"] = envelope.envelope_content(target.session_id, seq)
            sealed["metadata"] = {}
            sealed.pop("buffers", None)
            self._send(stream, sealed, ident=ident, buffers=[ct], track=track)

        try:
            target.seal_stream(stream_id, plaintext, then=deliver)
        except ProtocolError:
            self.dropped += 1
            return msg
        self.sealed_out += 1
        # Callers (ipykernel's execute_request) read the reply they sent: the plaintext.
        return msg


def install(kernel: Any, manager: ChannelManager, *, real_tee: bool) -> SealingGate:
    """Attach a :class:`SealingGate` to ``kernel``: wrap its session and control handlers."""

    def holds_secrets() -> bool:
        from ppml_kernel.secrets import STORE

        if STORE.names():
            return True
        # Dataset keys: only if the key store was ever loaded (an idle kernel stays light).
        key_store = sys.modules.get("ppml_kernel.keys.store")
        return bool(key_store is not None and key_store.default_store().names())

    required = real_tee or os.environ.get(SEALED_ENV, "auto").strip().lower() == "required"
    gate = SealingGate(kernel, manager, required=required, holds_secrets=holds_secrets)
    kernel.session.send = gate.send
    for msg_type, handler in list(kernel.control_handlers.items()):
        if msg_type in ("comm_open", "comm_msg", "comm_close"):
            continue  # the attestation channel's own control route (channel.jupyter)
        kernel.control_handlers[msg_type] = gate.control_guard(handler)
    return gate
