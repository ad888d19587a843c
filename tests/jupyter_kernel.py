"""Run a cell in a Jupyter server's kernel as a notebook does: the kernels channels websocket
(Jupyter messaging protocol 5.3), used by the environment and demo tests."""

from __future__ import annotations

import asyncio
import json
import uuid

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

CELL_LIMIT = 120


async def execute(channels_url: str, token: str, code: str) -> str:
    """What `code` prints in the kernel whose channels websocket is `channels_url` (ws://...);
    an error in the cell fails the test with its traceback."""
    headers = {"Authorization": f"token {token}"}
    socket = await websocket_connect(HTTPRequest(channels_url, headers=headers))
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "username": "", "session": uuid.uuid4().hex,
              "msg_type": "execute_request", "version": "5.3"}  # fmt: skip
    content = {"code": code, "silent": False, "store_history": False,
               "user_expressions": {}, "allow_stdin": False}  # fmt: skip
    await socket.write_message(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                                           "content": content, "channel": "shell"}))  # fmt: skip
    printed = []
    try:
        while True:
            message = json.loads(await asyncio.wait_for(socket.read_message(), CELL_LIMIT))
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                printed.append(message["content"]["text"])
            elif message["msg_type"] == "error":
                raise AssertionError("\n".join(message["content"]["traceback"]))
            elif (
                message["msg_type"] == "status" and message["content"]["execution_state"] == "idle"
            ):
                return "".join(printed)
    finally:
        socket.close()
