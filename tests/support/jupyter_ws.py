"""Run one cell over a Jupyter server's kernel websocket, as a browser would.

Shared by the hub and gateway smoke tests: both check that a cell reaches the PPML
kernel through real servers and proxies, not through jupyter_client directly.
"""

from __future__ import annotations

import json
import uuid

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


async def run_cell(ws_url: str, headers: dict[str, str], code: str, timeout: float = 60) -> str:
    """Execute ``code`` and return its stdout; raise if the reply is not ``ok``."""
    conn = await websocket_connect(HTTPRequest(ws_url, headers=headers, request_timeout=timeout))
    try:
        msg_id = uuid.uuid4().hex
        await conn.write_message(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "test",
                        "session": uuid.uuid4().hex,
                        "version": "5.3",
                        "date": "",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "buffers": [],
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                }
            )
        )
        out: list[str] = []
        reply = None
        idle = False
        while reply is None or not idle:
            raw = await conn.read_message()
            if raw is None:
                raise RuntimeError("kernel websocket closed before the cell finished")
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "execute_reply":
                reply = msg["content"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
        if reply.get("status") != "ok":
            raise RuntimeError(f"cell failed: {reply.get('ename')}: {reply.get('evalue')}")
        return "".join(out)
    finally:
        conn.close()
