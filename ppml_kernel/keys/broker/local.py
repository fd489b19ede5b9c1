"""The local key broker: data keys for Spark's Python workers, KEKs stay in the kernel.

In local mode the JVM is a child of the kernel process and every Python worker is a
child of the JVM. The kernel runs this broker on a Unix socket in a private (0700)
directory and answers only peers whose ``SO_PEERCRED`` pid descends from the kernel
process (and whose uid is the kernel's). A worker sends a file's wrapped data key and
gets the data key back; the KEK itself is never sent anywhere. Keys therefore appear in
no option, plan, environment variable, command line or log.

Where the kernel cannot learn a peer's pid (no ``SO_PEERCRED`` or no ``/proc``, e.g.
macOS) it cannot tell Spark's workers from any other process of the same user, so the
broker refuses to start unless ``$PPML_KEY_BROKER_PEERS=same-user`` (or
``peers="same-user"``) accepts that weaker mode explicitly (docs/datasets.md).

The socket path is not a secret. Workers find it through, in order, the ``keybroker``
data source option, ``$PPML_KEY_BROKER`` (set before the JVM starts so it inherits it),
or by walking their own ancestors for ``<tmp>/ppml-kernel-<uid>/broker-<pid>.sock``.

The attested cluster broker (:mod:`ppml_kernel.keys.broker.attested`) replaces this
where workers must prove they run in an enclave; the wire format here is deliberately tiny.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import socketserver
import stat
import struct
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

from ppml_kernel.b64 import b64decode as _unb64
from ppml_kernel.b64 import b64encode as _b64
from ppml_kernel.keys.broker.audit import REFUSE, AuditEvent, AuditLog
from ppml_kernel.keys.broker.core import audited
from ppml_kernel.keys.errors import (
    DatasetKeyError,
    UnknownKeyError,
    UnwrapError,
    WrongKeyError,
)
from ppml_kernel.keys.ids import KeyIdError, check_key_id
from ppml_kernel.keys.provider import KeyProvider
from ppml_kernel.keys.store import default_provider
from ppml_kernel.keys.wrap import WrappedKey

ENV_VAR = "PPML_KEY_BROKER"
ENV_PEERS = "PPML_KEY_BROKER_PEERS"
PEERS_DESCENDANTS = "descendants"  # the kernel's uid and a descendant of the kernel (default)
PEERS_SAME_USER = "same-user"  # any process of the kernel's user (weaker; must be chosen)
PEER_MODES = (PEERS_DESCENDANTS, PEERS_SAME_USER)
PEER = "local socket"  # where the local broker's peers are (for the audit)
_MAX_MESSAGE = 1 << 16
_LEN = struct.Struct(">I")
_ERROR_TYPES: dict[str, type[DatasetKeyError]] = {
    "unknown_key": UnknownKeyError,
    "wrong_key": WrongKeyError,
    "unwrap": UnwrapError,
}


def socket_dir() -> Path:
    """The per-user private directory that holds broker sockets."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"ppml-kernel-{uid}"


def _private_dir() -> Path:
    d = socket_dir()
    with contextlib.suppress(FileExistsError):
        d.mkdir(mode=0o700)
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
        raise DatasetKeyError(f"{d} is not a directory owned by this user; refusing to use it")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise DatasetKeyError(f"{d} is accessible by other users (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}); refusing to use it")
    return d


def peer_pids_available() -> bool:
    """True where the broker can learn a peer's pid and walk its ancestors (Linux)."""
    return hasattr(socket, "SO_PEERCRED") and os.path.exists(f"/proc/{os.getpid()}/stat")


def peer_mode(peers: str | None = None) -> str:
    """The peer check to use: ``peers``, else ``$PPML_KEY_BROKER_PEERS``, else descendants.

    Raises :class:`DatasetKeyError` for an unknown mode, and for the default mode on a
    platform that cannot check it (it would silently answer every same-user process).
    """
    mode = (peers or os.environ.get(ENV_PEERS) or PEERS_DESCENDANTS).strip().lower()
    if mode not in PEER_MODES:
        raise DatasetKeyError(
            f"${ENV_PEERS} (or peers=) must be one of {', '.join(PEER_MODES)}, got {mode!r}"
        )
    if mode == PEERS_DESCENDANTS and not peer_pids_available():
        raise DatasetKeyError(
            "the local key broker cannot tell which process is asking for keys on this "
            "platform (no SO_PEERCRED peer credentials or no /proc), so it would answer "
            "every process of this user; it does not start. To accept that weaker mode, "
            f"set {ENV_PEERS}={PEERS_SAME_USER} before starting Spark (see docs/datasets.md), "
            "or read with .option('keysource', 'keyfile')"
        )
    return mode


def _ppid(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def ancestors(pid: int, limit: int = 64) -> list[int]:
    """``pid``'s parent, grandparent, ... (Linux /proc), nearest first."""
    out = []
    cur = pid
    for _ in range(limit):
        parent = _ppid(cur)
        if parent is None or parent <= 0:
            break
        out.append(parent)
        if parent == 1:
            break
        cur = parent
    return out


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("key broker connection closed")
        buf += part
    return bytes(buf)


def _send(sock: socket.socket, doc: dict) -> None:
    body = json.dumps(doc).encode()
    sock.sendall(_LEN.pack(len(body)) + body)


def _recv(sock: socket.socket) -> dict:
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if n > _MAX_MESSAGE:
        raise ConnectionError("key broker message too large")
    return json.loads(_recv_exact(sock, n))


# --------------------------------------------------------------------------- server


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        who, denied = self.server.check_peer(sock)
        if denied:
            self.server.broker.refused(who, denied)
        try:
            while True:
                try:
                    req = _recv(sock)
                except (ConnectionError, ValueError):
                    return
                if denied:
                    _send(sock, {"ok": False, "error": "denied", "message": denied})
                    return
                _send(sock, self.server.answer(req, who))
        except OSError:
            return


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, path: str, broker: LocalKeyBroker) -> None:
        self.broker = broker
        super().__init__(path, _Handler)

    def check_peer(self, sock: socket.socket) -> tuple[str, str | None]:
        """Who the peer is, and None if it may ask for keys, else the reason (sent back)."""
        if not hasattr(socket, "SO_PEERCRED"):
            if self.broker.peers == PEERS_SAME_USER:
                return "a process of this user", None  # chosen: the 0700 directory guards
            return "a process", "this broker cannot check its peers here"  # refuses to start
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", raw)
        who = f"process {pid}"
        if uid != os.getuid():
            return who, f"peer uid {uid} is not the kernel's uid"
        if self.broker.peers == PEERS_SAME_USER:
            return who, None
        root = self.broker.root_pid
        if pid != root and root not in ancestors(pid):
            return who, f"process {pid} is not started by {self.broker.root_name}"
        return who, None

    def answer(self, req: dict, who: str) -> dict:
        provider = self.broker.provider
        audit = self.broker.audit
        op = req.get("op")
        try:
            if op == "unwrap":
                wrapped = WrappedKey(_unb64(req["kcv"]), _unb64(req["nonce"]), _unb64(req["ct"]))
                key_id = check_key_id(req["key_id"])
                ctx = _unb64(req["ctx"])
                key = audited(audit, who, PEER, "unwrap", key_id,
                              lambda: provider.unwrap(key_id, wrapped, ctx))
                return {"ok": True, "key": _b64(key)}
            if op == "wrap":
                key_id = check_key_id(req["key_id"])
                data_key, ctx = _unb64(req["key"]), _unb64(req["ctx"])
                w = audited(audit, who, PEER, "wrap", key_id,
                            lambda: provider.wrap(key_id, data_key, ctx))
                return {"ok": True, "kcv": _b64(w.key_check), "nonce": _b64(w.nonce),
                        "ct": _b64(w.ciphertext)}
            if op == "key_ids":
                return {"ok": True, "key_ids": provider.key_ids()}
            return {"ok": False, "error": "bad_request", "message": f"unknown op {op!r}"}
        except KeyIdError as exc:
            return {"ok": False, "error": "bad_request", "message": str(exc)}
        except UnknownKeyError as exc:
            return {"ok": False, "error": "unknown_key", "message": str(exc)}
        except WrongKeyError as exc:
            return {"ok": False, "error": "wrong_key", "message": str(exc)}
        except UnwrapError as exc:
            return {"ok": False, "error": "unwrap", "message": str(exc)}
        except (KeyError, TypeError, ValueError):
            return {"ok": False, "error": "bad_request", "message": "malformed request"}
        except DatasetKeyError as exc:
            return {"ok": False, "error": "key", "message": str(exc)}


class LocalKeyBroker:
    """Serves wrap/unwrap for ``provider`` to the kernel's descendant processes.

    ``root_pid`` (default: this process) is whose descendants may ask; the executor's
    key agent (:mod:`.agent`) serves its parent JVM and that JVM's descendants.
    Every answer and refusal is in :attr:`audit` (in memory, and the broker audit logger).
    """

    def __init__(self, provider: KeyProvider | None = None, *, peers: str | None = None,
                 audit: AuditLog | None = None, root_pid: int | None = None,
                 root_name: str = "the kernel process") -> None:
        self.peers = peer_mode(peers)  # before anything listens
        self.root_pid = os.getpid() if root_pid is None else root_pid
        self.root_name = root_name
        self.provider = provider if provider is not None else default_provider()
        self.audit = audit if audit is not None else AuditLog()
        self.path = str(_private_dir() / f"broker-{os.getpid()}.sock")
        if os.path.exists(self.path):
            os.unlink(self.path)  # a stale socket of a dead process with our pid
        old_umask = os.umask(0o177)
        try:
            self._server = _Server(self.path, self)
        finally:
            os.umask(old_umask)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ppml-key-broker", daemon=True
        )
        self._thread.start()

    def refused(self, who: str, reason: str) -> None:
        """Audit a peer the socket refused to answer."""
        self.audit.record(AuditEvent(time.time(), REFUSE, who, PEER, False, reason=reason))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if os.environ.get(ENV_VAR) == self.path:
            del os.environ[ENV_VAR]


_broker: LocalKeyBroker | None = None
_broker_lock = threading.Lock()


def start_local_broker(provider: KeyProvider | None = None, *,
                       peers: str | None = None) -> LocalKeyBroker:
    """Start (once per process) the broker and export its path for JVMs started later."""
    global _broker
    with _broker_lock:
        if _broker is None or _broker._server.fileno() < 0:
            _broker = LocalKeyBroker(provider, peers=peers)
            atexit.register(_broker.close)
        elif provider is not None:
            _broker.provider = provider
        os.environ[ENV_VAR] = _broker.path
        return _broker


def local_broker() -> LocalKeyBroker | None:
    return _broker


# --------------------------------------------------------------------------- client


class BrokerClient(KeyProvider):
    """A provider that forwards to a key broker; caches data keys in this process."""

    def __init__(self, path: str, cache_size: int = 4096) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._cache_size = cache_size

    @classmethod
    def discover(cls, explicit: str | None = None) -> BrokerClient:
        for candidate in _candidates(explicit):
            if os.path.exists(candidate):
                return cls(candidate)
        raise DatasetKeyError(
            "no key broker is reachable from this Spark worker: start Spark with "
            "ppml_kernel.spark.session.get_or_create_session() (or call "
            "ppml_kernel.keys.broker.local.start_local_broker() before the Spark session), "
            "or use .option('keysource', 'keyfile').option('keyfile', PATH)"
        )

    def _call(self, req: dict) -> dict:
        with self._lock:
            for attempt in (0, 1):
                try:
                    if self._sock is None:
                        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                        s.connect(self.path)
                        self._sock = s
                    _send(self._sock, req)
                    resp = _recv(self._sock)
                    break
                except OSError as exc:
                    if self._sock is not None:
                        self._sock.close()
                    self._sock = None
                    if attempt:
                        raise DatasetKeyError(
                            f"key broker at {self.path} is not answering ({exc.strerror or exc})"
                        ) from None
        if not resp.get("ok"):
            kind = resp.get("error", "")
            message = resp.get("message", "key broker refused the request")
            exc_type = _ERROR_TYPES.get(kind)
            if exc_type is not None:
                raise exc_type(message, key_id=req.get("key_id", "?"))
            raise DatasetKeyError(f"key broker: {message}")
        return resp

    def unwrap(self, key_id: str, wrapped: WrappedKey, context: bytes) -> bytes:
        ck = (key_id, wrapped.key_check, wrapped.nonce, wrapped.ciphertext, context)
        with self._lock:
            hit = self._cache.get(ck)
            if hit is not None:
                self._cache.move_to_end(ck)
                return hit
        resp = self._call({"op": "unwrap", "key_id": key_id, "kcv": _b64(wrapped.key_check),
                           "nonce": _b64(wrapped.nonce), "ct": _b64(wrapped.ciphertext),
                           "ctx": _b64(context)})
        key = _unb64(resp["key"])
        with self._lock:
            self._cache[ck] = key
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return key

    def wrap(self, key_id: str, data_key: bytes, context: bytes) -> WrappedKey:
        resp = self._call({"op": "wrap", "key_id": key_id, "key": _b64(data_key),
                           "ctx": _b64(context)})
        return WrappedKey(_unb64(resp["kcv"]), _unb64(resp["nonce"]), _unb64(resp["ct"]))

    def key_ids(self) -> list[str]:
        return list(self._call({"op": "key_ids"})["key_ids"])

    def describe(self) -> str:
        return f"key broker {self.path}"


def _candidates(explicit: str | None) -> list[str]:
    out = []
    if explicit:
        out.append(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        out.append(env)
    d = socket_dir()
    pids = [os.getpid(), *ancestors(os.getpid())] if sys.platform.startswith("linux") else []
    out.extend(str(d / f"broker-{pid}.sock") for pid in pids)
    return out
