"""A loopback stand-in for the Telegram Bot API, with scripted failures.

Design:
- A minimal HTTP/1.1 server on 127.0.0.1 (asyncio streams, keep-alive) answering
  `POST /bot<token>/<method>` for `sendMessage` (JSON body) and `sendPhoto` (multipart/form-data)
  the way Telegram does: `{"ok": true, "result": {...}}` or
  `{"ok": false, "error_code", "description", "parameters": {"retry_after"}}`.
- Unscripted behaviour follows the real API: a wrong token gets 401 Unauthorized, an unknown chat gets
  400 "Bad Request: chat not found".
- `script(...)` queues behaviours consumed one per request, in order: `"ok"`, `429` (with
  `retry_after`, see `rate_limited(n)`), `500`/`502`/`503`, `"timeout"` (the response never comes: the
  connection is held until `stop()`), `401`, `400`.
- Every request is recorded (`requests`) with its loop time, so tests can check the pacing, and
  `wait_requests(n)` waits on a condition instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

DEFAULT_TOKEN = "123456789:AAHfakeTokenForTestsOnly_abcdefghijk"


@dataclass
class Recorded:
    """One request as the server saw it, and what it answered."""

    api_method: str
    token: str
    at: float  # loop.time() when the request was complete
    fields: dict[str, Any]  # JSON body, or multipart text fields
    files: dict[str, bytes] = field(default_factory=dict)
    status: int = 0  # 0: never answered (timeout)
    path: str = ""


@dataclass(frozen=True)
class RateLimited:
    retry_after: int


class FakeTelegram:
    def __init__(self, token: str = DEFAULT_TOKEN, chats: tuple[str, ...] = ("42",)) -> None:
        self.token = token
        self.chats = {str(c) for c in chats}
        self.requests: list[Recorded] = []
        self._script: deque[Any] = deque()
        self._server: asyncio.AbstractServer | None = None
        self._release = asyncio.Event()
        self._changed = asyncio.Condition()
        self._message_id = 0
        self._connections: set[asyncio.Task] = set()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *behaviours: Any) -> None:
        """Queue behaviours for the next requests: "ok", "timeout", 500, 401, 400, RateLimited(n)."""
        self._script.extend(behaviours)

    async def start(self) -> FakeTelegram:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.close()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=2)
        for task in list(self._connections):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def wait_requests(self, count: int, timeout: float = 10.0) -> list[Recorded]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    def texts(self) -> list[str]:
        return [r.fields.get("text") or r.fields.get("caption", "") for r in self.requests if r.status == 200]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while not self._release.is_set():
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, payload = await self._handle(method, path, headers, body)
                if status == 0:
                    await self._release.wait()  # "timeout": never answer
                    return
                data = orjson.dumps(payload)
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _handle(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        token = parts[0][3:] if parts and parts[0].startswith("bot") else ""
        api_method = parts[1] if len(parts) > 1 else ""
        fields: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        ctype = headers.get("content-type", "")
        if ctype.startswith("application/json"):
            fields = json.loads(body or b"{}")
        elif ctype.startswith("multipart/form-data"):
            fields, files = _parse_multipart(ctype, body)
        record = Recorded(api_method, token, asyncio.get_running_loop().time(), fields, files, path=path)
        status, payload = self._answer(record)
        record.status = status
        async with self._changed:
            self.requests.append(record)
            self._changed.notify_all()
        return status, payload

    def _answer(self, record: Recorded) -> tuple[int, dict]:
        if record.token != self.token:
            return 401, _error(401, "Unauthorized")
        behaviour = self._script.popleft() if self._script else "ok"
        if behaviour == "timeout":
            return 0, {}
        if isinstance(behaviour, RateLimited):
            return 429, _error(
                429,
                f"Too Many Requests: retry after {behaviour.retry_after}",
                {"retry_after": behaviour.retry_after},
            )
        if isinstance(behaviour, int):
            return behaviour, _error(
                behaviour, "Internal Server Error" if behaviour >= 500 else "Bad Request"
            )
        if record.api_method not in ("sendMessage", "sendPhoto"):
            return 404, _error(404, "Not Found")
        chat = str(record.fields.get("chat_id", ""))
        if chat not in self.chats:
            return 400, _error(400, "Bad Request: chat not found")
        self._message_id += 1
        result = {"message_id": self._message_id, "chat": {"id": chat, "type": "private"}, "date": 0}
        return 200, {"ok": True, "result": result}


def _error(code: int, description: str, parameters: dict | None = None) -> dict:
    out: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        out["parameters"] = parameters
    return out


def _parse_multipart(ctype: str, body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body
    )
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename():
            files[name] = payload
        else:
            fields[name] = payload.decode()
    return fields, files
