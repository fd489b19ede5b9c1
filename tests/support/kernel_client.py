"""Run code in a real kernel through jupyter_client and collect what it sends."""

from __future__ import annotations

import queue
from dataclasses import dataclass, field


@dataclass
class Execution:
    reply: dict
    outputs: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.reply["content"]["status"]

    def text(self) -> str:
        """All text/plain, text/html and stream text, joined (for assertions)."""
        parts = []
        for msg in self.outputs:
            c = msg["content"]
            if msg["msg_type"] == "stream":
                parts.append(c["text"])
            elif msg["msg_type"] in ("execute_result", "display_data"):
                parts.append(c["data"].get("text/plain", ""))
                parts.append(c["data"].get("text/html", ""))
            elif msg["msg_type"] == "error":
                parts.append(c["ename"] + ": " + c["evalue"])
        return "\n".join(parts)

    def result(self) -> str | None:
        for msg in self.outputs:
            if msg["msg_type"] == "execute_result":
                return msg["content"]["data"]["text/plain"]
        return None


def execute(kc, code: str, timeout: float = 60, stdin: dict | None = None) -> Execution:
    """Execute ``code`` and gather iopub messages until the kernel is idle again.

    ``kc`` is a jupyter_client kernel client, or a verified
    :class:`~ppml_kernel.channel.sealed_client.SealedKernelClient` (sealed request).
    """
    from ppml_kernel.channel.sealed_client import SealedKernelClient

    if isinstance(kc, SealedKernelClient):
        sealed = kc.execute(code, timeout=timeout, allow_stdin=False)
        return Execution(sealed.reply, sealed.outputs)
    msg_id = kc.execute(code, allow_stdin=stdin is not None)
    outputs: list[dict] = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
        if msg["msg_type"] in ("stream", "display_data", "execute_result", "error"):
            outputs.append(msg)
    while True:
        try:
            reply = kc.get_shell_msg(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no execute_reply for {code!r}") from None
        if reply["parent_header"].get("msg_id") == msg_id:
            return Execution(reply, outputs)
