"""PPMLKernel: stock IPython, plus an attester, the ``%ppml`` magics and a ``ppml``
section in ``kernel_info`` that frontends use to recognise a PPML kernel.

Every request that can run code or read state goes through the sealing gate
(``kernel.sealing``): sealed requests from a verified owner's browser are opened, and in
sealed mode unsealed ones are refused, before ipykernel decides anything about them.

Start-up stays as cheap as ipykernel's: choosing the attester only inspects a few
paths, and nothing here imports pyspark, cryptography or dcap-qvl until a magic
needs them (an idle kernel starts no JVM).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import zmq
from ipykernel.ipkernel import IPythonKernel

from ppml_kernel import PROTOCOL_VERSION, __version__
from ppml_kernel.tee import Attester, get_attester
from ppml_kernel.tee.factory import requested_kind


def _collateral_for(quote: bytes) -> str:
    """Collateral for a hardware quote, from Intel PCS or ``$PPML_PCCS_URL`` (cached)."""
    from ppml_kernel.attestation.collateral import CollateralClient

    return CollateralClient().for_quote(quote).text


def _log_to_process_stderr() -> None:
    """ppml_kernel's log lines go to the kernel process's own stderr (the host's log).

    Without a handler, Python's last-resort handler writes warnings to ``sys.stderr``,
    which in a kernel is captured and published on IOPub as cell output: readable by
    the relay and shown to the user as a red stream. Log lines carry no content, but
    they are not notebook output either.
    """
    logger = logging.getLogger("ppml_kernel")
    if not any(getattr(h, "_ppml_process_stderr", False) for h in logger.handlers):
        # ipykernel also captures file descriptor 2; it keeps a copy of the original.
        original = getattr(sys.stderr, "_original_stdstream_copy", None)
        stream = (
            os.fdopen(os.dup(original), "w", buffering=1)
            if original is not None
            else sys.__stderr__
        )
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("[ppml-kernel] %(levelname)s | %(message)s"))
        handler._ppml_process_stderr = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False


class PPMLKernel(IPythonKernel):
    """An IPython kernel that knows which TEE it runs in and can prove it."""

    implementation = "ppml"
    implementation_version = __version__

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _log_to_process_stderr()
        self.tee_kind = requested_kind()
        self._attester: Attester | None = None
        from ppml_kernel.channel.jupyter import install as install_channel

        # The browser's attested channel: comm target plus control-channel route, and
        # getpass() through it. Quotes are made per browser request, never at start.
        from ppml_kernel.kernel.sealing import install as install_sealing
        from ppml_kernel.magics import load_ipython_extension

        manager = install_channel(
            self,
            attester=lambda: self.attester,
            collateral_provider=_collateral_for,
            kernel_info={"implementation": self.implementation, "version": __version__},
        )
        self.sealing = install_sealing(self, manager, real_tee=self.tee_kind != "simulated")
        # After every cell: a secret or a dataset key may have arrived; seal from then on.
        self.shell.events.register("post_execute", self.sealing.refresh)
        load_ipython_extension(self.shell)

    # ------------------------------------------------------------ the sealing gate
    async def shell_channel_thread_main(self, msg: Any) -> None:
        """Open a sealed shell frame on arrival, then route it as ipykernel does.

        Runs on ipykernel's shell-channel thread, in arrival order (the opening happens
        before the first ``await``). A sealed comm message is then shown to its comm's
        ``_reply_subshell_for``, as ipykernel shows a clear one (it cannot read a sealed
        one): that is how a widget learns of a click while the cell holds the main
        thread. Routing itself is unchanged (by the header, as for any sealed message).
        """
        def routable(header: dict[str, Any]) -> bool:
            subshell = header.get("subshell_id")
            manager = self.shell_channel_thread.manager
            return subshell is None or subshell in manager.list_subshell()

        try:
            opened = self.sealing.preopen(msg, self.session, routable)
        # boundary: never let early opening break the channel; the main thread decides
        except Exception:
            self.log.warning("could not open a sealed message on arrival", exc_info=True)
            opened = None
        if opened is not None:
            self._show_sealed_comm_msg(opened)
        await super().shell_channel_thread_main(msg)

    def _show_sealed_comm_msg(self, msg: dict[str, Any]) -> None:
        if msg["header"].get("msg_type") not in ("comm_msg", "comm_close"):
            return
        manager = getattr(self, "comm_manager", None)
        content = msg.get("content") or {}
        comm = manager.get_comm(content.get("comm_id")) if manager is not None else None
        route = getattr(comm, "_reply_subshell_for", None)
        if route is None:
            return
        try:
            route(content.get("data"), msg["header"].get("subshell_id"))
        except Exception:  # boundary: a comm's routing hook is a callback (any widget)
            self.log.debug("a comm's routing hook failed", exc_info=True)

    async def dispatch_shell(self, msg: Any, /, subshell_id: str | None = None,
                             *, concurrent: bool = False) -> None:
        """ipykernel's dispatch, with the raw frames known to the sealing gate (so it
        takes the outcome of opening them on arrival instead of opening them again)."""
        from ppml_kernel.kernel.sealing import handling

        with handling(msg):
            await super().dispatch_shell(msg, subshell_id=subshell_id, concurrent=concurrent)

    def should_handle(self, stream: Any, msg: dict[str, Any], idents: Any) -> bool:
        """Open a sealed request in place, or refuse an unsealed one in sealed mode."""
        return self.sealing.admit(stream, idents, msg)

    def _send_abort_reply(self, stream: Any, msg: dict[str, Any], idents: Any) -> None:
        # ipykernel aborts queued execute requests after an error without handling
        # them; a sealed one still uses its sequence number, and its reply is sealed.
        self.sealing.consume(msg)
        super()._send_abort_reply(stream, msg, idents)

    def _input_request(self, prompt: str, ident: Any, parent: Any, password: bool = False) -> str:
        """ipykernel's input request, with the reply opened (and unsealed ones ignored)
        by the sealing gate; a forged ``input_reply`` never answers a sealed prompt."""
        for out in (sys.stdout, sys.stderr):
            if out is not None:
                out.flush()
        while True:  # purge stale replies
            try:
                self.stdin_socket.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError as e:
                if e.errno == zmq.EAGAIN:
                    break
                raise
        assert self.session is not None
        content = {"prompt": str(prompt), "password": bool(password)}
        self.session.send(self.stdin_socket, "input_request", content, parent, ident=ident)
        while True:
            try:
                rlist, _, xlist = zmq.select([self.stdin_socket], [], [self.stdin_socket], 0.01)
                if not (rlist or xlist):
                    continue
                _, reply = self.session.recv(self.stdin_socket)
                if reply is None:
                    continue
            except KeyboardInterrupt:
                raise KeyboardInterrupt("Interrupted by user") from None
            except Exception:  # boundary: a message loop (as ipykernel's); skip a bad reply
                self.log.warning("Invalid input_reply message", exc_info=False)
                continue
            value = self.sealing.input_value(reply, parent)
            if value is None:
                continue
            if value == "\x04":
                raise EOFError
            return value

    @property
    def attester(self) -> Attester:
        """The attester for this kernel's TEE, built on first use."""
        if self._attester is None:
            self._attester = get_attester(self.tee_kind)
        return self._attester

    @property
    def simulated(self) -> bool:
        return self.tee_kind == "simulated"

    @property
    def banner(self) -> str:  # type: ignore[override]
        base = super().banner or ""
        if self.simulated:
            note = "PPML kernel on a SIMULATED enclave: NOT confidential (teaching, demos, tests)."
        else:
            note = f"PPML kernel in a {self.tee_kind} TEE. Run %ppml status to see its evidence."
        return f"{base}\n{note}\n"

    @property
    def kernel_info(self) -> dict[str, Any]:
        info = super().kernel_info
        info["ppml"] = {
            "protocol_version": PROTOCOL_VERSION,
            "version": __version__,
            "tee": self.tee_kind,
            "simulated": self.simulated,
            # Informative: the browser learns the mode from its sealed `ready` message.
            "sealed": self.sealing.on,
        }
        return info
