"""Run code in a real PPML kernel as its owner: every request sealed (sealed mode is on as
soon as the kernel holds a dataset key), results in :class:`kernel_client.Execution` form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.kernel_client import Execution
from support.sealed import owner_session, start_kernel, stop_kernel

from ppml_kernel.channel import crypto

SHOWN = ("stream", "display_data", "execute_result", "error")


class Owner:
    """A kernel started for a test module, and its owner's sealed session."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.km, self.kc = start_kernel(root, env)
        self.session = owner_session(self.kc, crypto.generate_owner_key())

    def messages(self, code: str, timeout: float = 300) -> tuple[dict, list[dict]]:
        """The reply and every opened IOPub message of ``code`` (comms included)."""
        result = self.session.execute(code, timeout=timeout, allow_stdin=False)
        return result.reply, result.messages

    def execute(self, code: str, timeout: float = 300) -> Execution:
        reply, msgs = self.messages(code, timeout)
        return Execution(reply, [m for m in msgs if m["msg_type"] in SHOWN])

    def send(self, msg_type: str, content: dict[str, Any],
             metadata: dict[str, Any] | None = None) -> str:
        """A sealed shell message without waiting (a widget frontend's comm traffic)."""
        msg = self.kc.session.msg(msg_type, content, metadata=metadata or {})
        self.session.client.seal_message(msg, "shell")
        self.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def stop(self) -> None:
        stop_kernel(self.km, self.kc)
