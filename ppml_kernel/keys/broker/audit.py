"""The key broker's audit log: every attestation, grant and refusal, never a key.

Events are kept in memory (bounded), sent to the ``ppml_kernel.spark.audit`` logger
and, if a path is given, appended as JSON lines to a 0600 file. Fields are names,
ids, measurements, verdicts and reasons; key material has no field to go into.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

# The logger keeps its first name: deployments attach handlers to it by that name.
LOGGER = logging.getLogger("ppml_kernel.spark.audit")
# Silent unless a deployment attaches a handler to this logger (or passes an audit file):
# refusals must not spill into notebook output through the root logger.
LOGGER.addHandler(logging.NullHandler())
LOGGER.propagate = False

ATTEST = "attest"
PROBE = "probe"
GRANT = "grant"
REFUSE = "refuse"
ERROR = "error"


@dataclass(frozen=True)
class AuditEvent:
    """One thing the broker did or refused to do."""

    at: float
    event: str  # attest | probe | grant | refuse | error
    executor: str
    peer: str
    ok: bool
    reason: str = ""
    key_ids: tuple[str, ...] = ()
    tee: str = ""
    measurement: str = ""
    tcb_status: str = ""
    simulated: bool = False
    session: str = ""  # first 8 hex chars of the session id, to follow one worker

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["key_ids"] = list(self.key_ids)
        data["time"] = iso_time(self.at)
        return data

    def line(self) -> str:
        verdict = "ok" if self.ok else "REFUSED"
        keys = f" keys={','.join(self.key_ids)}" if self.key_ids else ""
        why = f" reason={self.reason}" if self.reason else ""
        return f"{self.event} {verdict} {self.executor} peer={self.peer}{keys}{why}"


def iso_time(ts: float) -> str:
    """UTC time with milliseconds, as written in audit lines."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


class AuditLog:
    """Thread-safe, bounded record of broker events (optionally mirrored to a file)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, max_events: int = 10000) -> None:
        self._events: deque[AuditEvent] = deque(maxlen=max_events)
        self._lock = threading.Lock()
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            os.close(fd)

    def record(self, event: AuditEvent) -> None:
        with self._lock:
            self._events.append(event)
            if self.path is not None:
                with open(self.path, "a", encoding="utf-8") as out:
                    out.write(json.dumps(event.to_dict(), sort_keys=True) + "\n")
        level = logging.INFO if event.ok else logging.WARNING
        LOGGER.log(level, "%s", event.line())

    def events(self, kind: str | None = None) -> list[AuditEvent]:
        with self._lock:
            items = list(self._events)
        return [e for e in items if kind is None or e.event == kind]

    def refusals(self) -> list[AuditEvent]:
        return [e for e in self.events() if not e.ok]

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

