"""The sealed headless client: what the browser extension does, for tools and tests.

It attests a kernel (``ppml-attest/2`` handshake on the control channel, the quote
verified with :class:`~ppml_kernel.attestation.Verifier` and a policy), proves an
owner key, then seals every request and opens every reply and output, through a
:mod:`jupyter_client` kernel client. ``ppml-kernel run`` executes notebooks with it.

Every sealed message of this session is opened in arrival order whatever request it
belongs to (each stream's sequence numbers must be consumed in order); messages sealed
to other sessions are ignored, as a browser tab ignores another tab's.
"""

from __future__ import annotations

import dataclasses
import queue
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ppml_kernel.channel import protocol
from ppml_kernel.channel.client import BrowserClient, simulated_root
from ppml_kernel.channel.errors import AttestedChannelError
from ppml_kernel.channel.protocol import TARGET_NAME, ProtocolError

if TYPE_CHECKING:
    from ppml_kernel.attestation import Policy

SecretProvider = Callable[[str, str], Any]  # (name, prompt) -> value, None (decline) or LATER
LATER = object()  # a provider's answer: leave the prompt open (nobody has answered yet)
InputProvider = Callable[[str, bool], str]  # (prompt, password) -> answer
OUTPUT_TYPES = ("stream", "display_data", "execute_result", "error", "update_display_data")


class SealedClientError(AttestedChannelError, RuntimeError):
    """Attestation or a sealed exchange failed; the message says why (never a secret)."""


@dataclass
class SealedResult:
    """One request's reply and the outputs it caused (opened)."""

    reply: dict[str, Any]
    outputs: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)  # every IOPub message

    @property
    def status(self) -> str:
        return self.reply["content"].get("status", "")


class SealedKernelClient:
    """A verified, owner-bound, sealed session over a jupyter_client kernel client."""

    def __init__(
        self,
        kc: Any,
        *,
        policy: Policy | None = None,
        allow_simulated: bool = False,
        owner_key: Any = None,
        at: int | None = None,
        secret_provider: SecretProvider | None = None,
        input_provider: InputProvider | None = None,
        record: bool = False,
    ) -> None:
        self.kc = kc
        self.policy = policy
        self.allow_simulated = allow_simulated
        self.at = at
        self.client = BrowserClient(owner_key=owner_key)
        self.comm_id = uuid.uuid4().hex
        self.secret_provider = secret_provider
        self.input_provider = input_provider
        self.ready: dict[str, Any] = {}
        self.evidence: dict[str, Any] = {}
        self.channel_events: list[dict[str, Any]] = []  # opened attestation messages
        self.foreign = 0  # sealed messages for other sessions, ignored
        self.record = record
        self.wire: list[str] = []  # with ``record``: every message as received (tests)
        self._comm_inbox: list[Any] = []

    # ------------------------------------------------------------ transport
    def _control(self, msg_type: str, content: dict[str, Any]) -> None:
        self.kc.control_channel.send(self.kc.session.msg(msg_type, content))

    def _send_channel(self, data: dict[str, Any]) -> None:
        self._control("comm_msg", {"comm_id": self.comm_id, "data": data})

    def _verifier(self, evidence: dict[str, Any]) -> Any:
        from ppml_kernel.attestation import Policy, TrustAnchor, Verifier

        policy = self.policy or Policy()
        root = simulated_root(evidence.get("collateral") or "") if self.allow_simulated else None
        if root is None:
            return Verifier(policy)
        anchor = TrustAnchor("simulated root allowed by the user", root, simulated=True)
        policy = dataclasses.replace(policy, allow_simulated=True)
        return Verifier(policy, simulated_anchor=anchor)

    def attest(self, timeout: float = 120) -> dict[str, Any]:
        """Run the handshake; return the kernel's ``ready`` message (owners, sealed mode)."""
        self._control(
            "comm_open",
            {"comm_id": self.comm_id, "target_name": TARGET_NAME, "data": self.client.hello()},
        )
        evidence = self._next_comm(timeout)
        if not isinstance(evidence, dict) or evidence.get("type") != protocol.EVIDENCE:
            raise SealedClientError(f"the kernel did not send evidence: {evidence!r}"[:500])
        self.evidence = evidence
        try:
            finished = self.client.accept(evidence, self._verifier(evidence), at=self.at)
        except ProtocolError as exc:
            self._send_channel({"type": protocol.ABORT, "reason": str(exc)[:400]})
            raise SealedClientError(f"attestation failed ({exc.code}): {exc}") from None
        self._send_channel(finished)
        ready = self._next_comm(timeout)
        if isinstance(ready, dict) and ready.get("type") == protocol.ERROR:
            raise SealedClientError(
                f"the kernel refused: {ready.get('code')}: {ready.get('message')}"
            )
        self.ready = self.client.open(ready)
        if self.ready.get("type") != protocol.READY:
            raise SealedClientError("the kernel did not confirm the session")
        return self.ready

    @property
    def session_id(self) -> str:
        return self.client.session_id

    # ------------------------------------------------------------ receiving
    def _seen(self, msg: dict[str, Any]) -> None:
        if self.record:
            buffers = [bytes(b).hex() for b in msg.get("buffers") or []]
            self.wire.append(repr((msg.get("header"), msg.get("content"), buffers)))

    def _handle_iopub(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Route one IOPub message; return it opened if it is part of the conversation."""
        self._seen(msg)
        content = msg.get("content") or {}
        if msg["msg_type"] == "comm_msg" and content.get("comm_id") == self.comm_id:
            self._on_channel(content.get("data"))
            return None
        if isinstance(content, dict) and protocol.SEALED_KEY in content:
            if not self.client.keys or not self.client.is_mine(msg):
                self.foreign += 1
                return None
            return self.client.open_message(msg, "iopub")
        return msg

    def _on_channel(self, data: Any) -> None:
        if not self.client.keys:
            self._comm_inbox.append(data)
            return
        if isinstance(data, dict) and data.get("type") == protocol.ERROR:
            self.channel_events.append(data)
            return
        inner = self.client.open(data)
        self.channel_events.append(inner)
        if inner["type"] == protocol.SECRET_REQUEST:
            value = None
            if self.secret_provider is not None:
                value = self.secret_provider(inner["name"], inner.get("prompt", ""))
            if value is LATER:
                return
            if value is None:
                reply = {
                    "type": protocol.SECRET_DECLINE,
                    "request_id": inner["request_id"],
                    "reason": "no value for this secret in the headless client",
                }
            else:
                reply = {
                    "type": protocol.SECRET,
                    "request_id": inner["request_id"],
                    "name": inner["name"],
                    "value": value,
                }
            self._send_channel(self.client.seal(reply))

    def _next_comm(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not self._comm_inbox:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SealedClientError("no answer from the kernel's attestation channel")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(0.5, remaining))
            except queue.Empty:
                continue
            self._seen(msg)
            content = msg.get("content") or {}
            if msg["msg_type"] == "comm_msg" and content.get("comm_id") == self.comm_id:
                self._comm_inbox.append(content.get("data"))
            elif self.client.keys and isinstance(content, dict) and protocol.SEALED_KEY in content:
                self._handle_iopub(msg)
        return self._comm_inbox.pop(0)

    def send_secret(self, name: str, value: str, *, replace: bool = False) -> dict[str, Any]:
        """Send an unsolicited secret (the palette command's path); return the kernel's result."""
        before = len(self.channel_events)
        self._send_channel(
            self.client.seal(
                {
                    "type": protocol.SECRET,
                    "request_id": None,
                    "name": name,
                    "value": value,
                    "replace": replace,
                }
            )
        )
        return self._wait_channel(protocol.SECRET_RESULT, before)

    def grant(self, owner_pub: bytes, label: str) -> dict[str, Any]:
        before = len(self.channel_events)
        self._send_channel(self.client.grant(owner_pub, label))
        return self._wait_channel(protocol.OWNER_RESULT, before)

    def _wait_channel(self, kind: str, before: int, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.channel_events[before:]:
                if event.get("type") in (kind, protocol.ERROR):
                    return event
            try:
                self._handle_iopub(self.kc.get_iopub_msg(timeout=0.2))
            except queue.Empty:
                continue
        raise SealedClientError(f"no {kind} from the kernel")

    # ------------------------------------------------------------ requests
    def seal(
        self, msg_type: str, content: dict[str, Any], buffers: list[bytes] | None = None
    ) -> dict[str, Any]:
        """A sealed shell request, ready to send (tests send some twice, or out of order)."""
        msg = self.kc.session.msg(msg_type, content)
        if buffers:
            msg["buffers"] = list(buffers)
        return self.client.seal_message(msg, "shell")

    def submit(
        self, msg_type: str, content: dict[str, Any], buffers: list[bytes] | None = None
    ) -> str:
        """Send one sealed shell request without waiting; return its msg_id."""
        msg = self.seal(msg_type, content, buffers)
        self.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def request(
        self,
        msg_type: str,
        content: dict[str, Any],
        *,
        timeout: float = 120,
        buffers: list[bytes] | None = None,
    ) -> SealedResult:
        """Send one sealed shell request; gather its opened outputs and its reply."""
        msg_id = self.submit(msg_type, content, buffers)
        return self.collect(msg_id, timeout, wants_reply=msg_type.endswith("_request"))

    @staticmethod
    def execute_content(code: str, allow_stdin: bool = False) -> dict[str, Any]:
        return {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": allow_stdin,
            "stop_on_error": True,
        }

    def execute(self, code: str, *, timeout: float = 600, allow_stdin: bool = True) -> SealedResult:
        content = self.execute_content(code, allow_stdin and self.input_provider is not None)
        return self.request("execute_request", content, timeout=timeout)

    def collect(self, msg_id: str, timeout: float = 600, wants_reply: bool = True) -> SealedResult:
        deadline = time.monotonic() + timeout
        result = SealedResult(reply={})
        idle = False
        while not idle or (wants_reply and not result.reply):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SealedClientError(f"no answer to {msg_id} within {timeout:g} s")
            self._poll_stdin()
            if wants_reply and not result.reply:
                try:
                    reply = self.kc.get_shell_msg(timeout=0.01)
                except queue.Empty:
                    reply = None
                if reply is not None:
                    if (
                        isinstance(reply.get("content"), dict)
                        and protocol.SEALED_KEY in reply["content"]
                    ):
                        if not self.client.is_mine(reply):
                            self.foreign += 1
                            continue
                        self.client.open_message(reply, "shell")
                    if reply["parent_header"].get("msg_id") == msg_id:
                        result.reply = reply
            try:
                msg = self.kc.get_iopub_msg(timeout=min(0.05, remaining))
            except queue.Empty:
                continue
            opened = self._handle_iopub(msg)
            if opened is None or opened["parent_header"].get("msg_id") != msg_id:
                continue
            result.messages.append(opened)
            if (
                opened["msg_type"] == "status"
                and opened["content"].get("execution_state") == "idle"
            ):
                idle = True
            elif opened["msg_type"] in OUTPUT_TYPES:
                result.outputs.append(opened)
            elif opened["msg_type"] == "clear_output":
                result.outputs.clear()
        return result

    def _poll_stdin(self) -> None:
        try:
            msg = self.kc.get_stdin_msg(timeout=0)
        except queue.Empty:
            return
        self._seen(msg)
        if isinstance(msg.get("content"), dict) and protocol.SEALED_KEY in msg["content"]:
            if not self.client.is_mine(msg):
                return
            self.client.open_message(msg, "stdin")
        if msg["msg_type"] != "input_request":
            return
        content = msg["content"]
        answer = (
            self.input_provider(content.get("prompt", ""), bool(content.get("password")))
            if self.input_provider
            else ""
        )
        reply = self.kc.session.msg("input_reply", {"value": answer}, parent=msg)
        self.client.seal_message(reply, "stdin")
        self.kc.stdin_channel.send(reply)
