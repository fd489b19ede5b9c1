"""Ask a broker socket from a process the caller did not start (peer-check tests)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

# A double fork: the grandchild is re-parented away from the caller, same user.
_CODE = """
import json, os, socket, struct, sys, time
if os.fork():
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
time.sleep(0.3)
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
body = json.dumps({"op": "key_ids"}).encode()
s.sendall(struct.pack(">I", len(body)) + body)
n = struct.unpack(">I", s.recv(4))[0]
with open(sys.argv[2], "w") as f:
    f.write(s.recv(n).decode())
"""


def ask_as_foreign_process(socket_path: str, out: Path) -> dict:
    """The broker's answer to a ``key_ids`` request from a non-descendant process."""
    out.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-c", _CODE, socket_path, str(out)], check=True,
                   timeout=30)
    for _ in range(100):
        if out.exists() and out.read_text():
            break
        time.sleep(0.1)
    reply = json.loads(out.read_text())
    out.unlink()
    return reply
