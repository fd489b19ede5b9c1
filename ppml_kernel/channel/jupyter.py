"""Wire ppml-attest/2 into an ipykernel kernel: comm target plus a control-channel route.

While a cell runs, ipykernel does not read the shell channel, so a browser answer to a
blocking ``%ppml secret`` sent as an ordinary comm message would wait until the cell
ends: a deadlock. The extension therefore sends its ``comm_open``, ``comm_msg`` and
``comm_close`` for target ``ppml.attest/2`` on the **control** channel, which
ipykernel serves on its own thread. This module registers control handlers that
accept exactly those messages (for this target or its known comms; everything else
is ignored with a log line) and the ordinary shell comm target as a fallback.
Kernel -> browser messages are ordinary comm messages on IOPub. Interrupts are not
affected: the blocked cell waits on an Event in short slices, so SIGINT raises
KeyboardInterrupt there as usual.

The handshake (a quote, perhaps a first collateral download) runs on a worker thread:
interrupts and shutdown on the control thread never wait for it. A comm whose session
failed or was evicted is closed and unregistered, so any number of ``comm_open``s
leaves a bounded number of comms behind.

Installing is cheap (standard library only): the channel's cryptography is imported
by the manager on the first ``comm_open`` for the target, never at kernel start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ppml_kernel.channel.manager import ChannelError, ChannelManager
from ppml_kernel.channel.protocol import TARGET_NAME
from ppml_kernel.tee.base import Attester

if TYPE_CHECKING:
    from ppml_kernel.channel.session import CollateralProvider

log = logging.getLogger("ppml_kernel.channel")

ATTRIBUTE = "ppml_channel"  # kernel.ppml_channel -> ChannelManager


def _content(msg: dict[str, Any]) -> dict[str, Any]:
    content = msg.get("content")
    return content if isinstance(content, dict) else {}


def install(
    kernel: Any,
    attester: Attester | Callable[[], Attester],
    collateral_provider: CollateralProvider | None = None,
    secret_sink: Callable[[str, str, str], None] | None = None,
    kernel_info: dict[str, Any] | None = None,
    hook_getpass: bool = True,
) -> ChannelManager:
    """Attach a :class:`ChannelManager` to ``kernel`` and route its messages.

    ``secret_sink`` defaults to :data:`ppml_kernel.secrets.STORE`. With
    ``hook_getpass``, ``getpass.getpass()`` in cells asks the verified browser instead
    of sending the password over the unencrypted stdin channel (and fails closed).
    """
    secret_exists: Callable[[str], bool] | None = None
    if secret_sink is None:
        from ppml_kernel.secrets import STORE

        secret_sink = STORE.put
        secret_exists = STORE.__contains__
    manager = ChannelManager(
        attester, collateral_provider, secret_sink, kernel_info, secret_exists=secret_exists
    )

    def on_comm_open(comm: Any, msg: dict[str, Any]) -> None:
        ref = comm.comm_id
        comm.on_msg(lambda m: manager.on_message(ref, _content(m).get("data")))
        comm.on_close(lambda m: manager.on_close(ref))

        def release() -> None:
            comm.close(data={"reason": "session closed"})

        threading.Thread(
            target=manager.on_open,
            args=(ref, _content(msg).get("data"), comm.send, release),
            name="ppml-attest-handshake",
            daemon=True,
        ).start()

    kernel.comm_manager.register_target(TARGET_NAME, on_comm_open)

    def control_comm(stream: Any, ident: Any, msg: dict[str, Any]) -> None:
        msg_type = msg.get("header", {}).get("msg_type")
        content = _content(msg)
        comm_id = content.get("comm_id")
        if msg_type == "comm_open":
            if content.get("target_name") != TARGET_NAME:
                log.warning(
                    "ignoring comm_open for %r on the control channel", content.get("target_name")
                )
                return
            if not isinstance(comm_id, str) or not 0 < len(comm_id) <= 128:
                log.warning("ignoring a %s comm_open without a usable comm_id", TARGET_NAME)
                return
            kernel.comm_manager.comm_open(stream, ident, msg)
            return
        if not isinstance(comm_id, str) or not manager.has_session(comm_id):
            log.warning("ignoring %s for a comm that is not a %s session", msg_type, TARGET_NAME)
            return
        if msg_type == "comm_msg":
            manager.on_message(comm_id, content.get("data"))
        else:
            kernel.comm_manager.comm_close(stream, ident, msg)

    for msg_type in ("comm_open", "comm_msg", "comm_close"):
        kernel.control_handlers[msg_type] = control_comm

    if hook_getpass:

        def channel_getpass(prompt: str = "Password: ", stream: Any = None, **_: Any) -> str:
            try:
                return manager.request_secret("getpass", prompt or "Password: ")
            except ChannelError as exc:
                # Fail closed: never fall back to the plaintext stdin channel.
                raise RuntimeError(f"getpass refused: {exc}") from None

        kernel.getpass = channel_getpass
    setattr(kernel, ATTRIBUTE, manager)
    return manager


def manager_of(kernel: Any) -> ChannelManager | None:
    """The channel manager installed on ``kernel``, if any."""
    return getattr(kernel, ATTRIBUTE, None)
