"""The attested broker's HTTP transport: bounded, time-limited, never a traceback.

Only transport lives here (connection slots, per-request deadlines, JSON in and
out); every decision is the broker's (:meth:`KeyBroker.dispatch`), and every refusal
made here is still audited through it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from ppml_kernel.keys.broker import protocol as P
from ppml_kernel.keys.broker.audit import ERROR, AuditEvent

if TYPE_CHECKING:
    from ppml_kernel.keys.broker.attested import KeyBroker


_LENGTH = re.compile(r"[0-9]{1,9}")


@dataclass
class _Conn:
    """One accepted connection: who, and since when it has waited for a whole request."""

    sock: socket.socket
    peer: str
    reading: bool = True
    since: float = field(default_factory=time.monotonic)


class Server(ThreadingHTTPServer):
    """A threaded HTTP server with a fixed number of connection slots.

    Slow clients cannot hold the slots: each request must arrive whole within the
    broker's ``io_timeout`` (headers and body together, however slowly the bytes
    trickle), and when every slot is taken a new connection takes the slot of the
    connection that has waited longest for its request (if it has waited at least a
    second). Only when every slot is busy with a request being answered, or with a
    connection younger than that, is the newcomer answered 503. Every refusal is audited.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type, broker: KeyBroker) -> None:
        self.broker = broker
        self.max_connections = broker.max_connections
        self.grace = min(1.0, broker.io_timeout / 2)
        self._conns: dict[socket.socket, _Conn] = {}
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        peer = f"{client_address[0]}:{client_address[1]}"
        victim: _Conn | None = None
        with self._conns_lock:
            if len(self._conns) >= self.max_connections:
                victim = self._longest_waiting()
                if victim is not None:
                    del self._conns[victim.sock]
            admitted = len(self._conns) < self.max_connections
            if admitted:
                self._conns[request] = _Conn(request, peer)
        if victim is not None:
            waited = time.monotonic() - victim.since
            self.broker._refused_transport(
                victim.peer, f"connection dropped: no complete request after {waited:.1f} s "
                f"while all {self.max_connections} connection slots were taken"
            )
            with contextlib.suppress(OSError):
                victim.sock.shutdown(socket.SHUT_RDWR)  # its thread sees EOF and ends
        if not admitted:
            self.broker._refused_transport(
                peer, f"busy: all {self.max_connections} connection slots are answering requests"
            )
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def _longest_waiting(self) -> _Conn | None:
        now = time.monotonic()
        waiting = [c for c in self._conns.values() if c.reading and now - c.since >= self.grace]
        return min(waiting, key=lambda c: c.since) if waiting else None

    def admitted(self, request: Any) -> bool:
        """False once the connection's slot was given to another (it is being closed)."""
        with self._conns_lock:
            return request in self._conns

    def mark(self, request: Any, reading: bool) -> None:
        """A request is now being waited for (``reading``) or answered."""
        with self._conns_lock:
            conn = self._conns.get(request)
            if conn is not None:
                conn.reading = reading
                conn.since = time.monotonic()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conns_lock:
                self._conns.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Never print tracebacks to the kernel's stderr; the handler already answered."""


class _DeadlineReader(io.RawIOBase):
    """Socket reads that share one deadline per request (a per-read timeout would let a
    client that sends one byte every few seconds hold its connection for ever)."""

    def __init__(self, sock: socket.socket, handler: Any) -> None:
        super().__init__()
        self._sock = sock
        self._handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:  # type: ignore[override]
        left = self._handler.deadline - time.monotonic()
        if left <= 0:
            raise self._handler.timed_out()
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            raise self._handler.timed_out() from None


def handler_for(broker: KeyBroker) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "ppml-key-broker/1"
        sys_version = ""
        timeout = broker.io_timeout
        disable_nagle_algorithm = True  # headers and body in separate writes: no 40 ms stall
        server: Server
        deadline = 0.0

        def setup(self) -> None:
            super().setup()
            self.peer = f"{self.client_address[0]}:{self.client_address[1]}"
            self.rfile.close()  # the plain socket reader; reads go through the deadline
            self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))

        def handle_one_request(self) -> None:
            """One request, which must arrive whole within ``io_timeout`` from now."""
            self.deadline = time.monotonic() + broker.io_timeout
            self.server.mark(self.request, reading=True)
            super().handle_one_request()

        def timed_out(self) -> TimeoutError:
            if self.server.admitted(self.request):  # a dropped one was audited when dropped
                broker._refused_transport(
                    self.peer, f"connection dropped: no complete request within "
                    f"{broker.io_timeout:g} s"
                )
            return TimeoutError("request not complete in time")

        def log_message(self, format: str, *args: Any) -> None:
            """Requests are audited by the broker; no access log on stderr."""

        def send_error(self, code: int, message: str | None = None,
                       explain: str | None = None) -> None:
            """The http.server's own refusals (bad request line, headers, method) are audited."""
            self.close_connection = True
            if not self.server.admitted(self.request):
                return  # its slot was given away mid-request: audited then, nothing to say
            reason = P.clean_text(message or self.responses.get(code, ("",))[0], 120)
            broker._malformed(self.peer, f"HTTP {code}: {reason}")
            self.request_version = "HTTP/1.1"  # answer with a status line, even to junk
            self._send(code, {"error": f"malformed request: {reason}"})

        def _refuse(self, status: int, reason: str, *, close: bool = False) -> None:
            broker._malformed(self.peer, f"{reason} ({self.command} {self._path()})")
            if close:
                self.close_connection = True
            self._send(status, {"error": f"malformed request: {reason}"})

        def _path(self) -> str:
            return P.clean_text(getattr(self, "path", ""), 64)

        def _send(self, status: int, payload: dict[str, object]) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.connection.settimeout(broker.io_timeout)  # writes get a fresh budget
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self.server.mark(self.request, reading=False)
            if self.path == "/v1/health":
                self._send(200, {"ok": True, "version": P.VERSION})
            else:
                self._refuse(405, "use POST")

        def _length(self) -> int | None:
            """The body's length, or None after answering why the request is refused."""
            if self.headers.get("Transfer-Encoding") is not None:
                self._refuse(411, "Transfer-Encoding is not accepted; send Content-Length",
                             close=True)
                return None
            values = self.headers.get_all("Content-Length") or []
            if not values:
                self._refuse(411, "Content-Length required", close=True)
                return None
            if len(values) > 1 or not _LENGTH.fullmatch(values[0].strip()):
                self._refuse(400, "Content-Length must be one non-negative decimal integer",
                             close=True)
                return None
            length = int(values[0])
            if length > P.MAX_REQUEST_BYTES:
                self._refuse(413, f"request larger than {P.MAX_REQUEST_BYTES} bytes", close=True)
                return None
            return length

        def do_POST(self) -> None:
            length = self._length()
            if length is None:
                return
            raw = self.rfile.read(length)
            if len(raw) != length:
                self.close_connection = True
                if self.server.admitted(self.request):
                    broker._malformed(self.peer, f"connection closed after {len(raw)} of "
                                      f"{length} body bytes ({self._path()})")
                return
            self.server.mark(self.request, reading=False)
            try:
                body = json.loads(raw) if raw else {}
            except (ValueError, UnicodeDecodeError):
                self._refuse(400, "body is not JSON")
                return
            if not isinstance(body, dict):
                self._refuse(400, "body must be a JSON object")
                return
            try:
                status, payload = broker.dispatch(self.path, body, self.peer)
            # boundary: an HTTP request handler keeps serving; say what kind of failure,
            # not its data
            except Exception as exc:
                broker.audit.record(
                    AuditEvent(time.time(), ERROR, "unknown executor", self.peer, False,
                               reason=f"internal error: {type(exc).__name__}")
                )
                status, payload = 500, {"error": f"internal error ({type(exc).__name__})"}
            self._send(status, payload)

    return Handler
