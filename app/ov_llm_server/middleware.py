"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs throughput on streams)."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Takes ``X-Request-Id`` from the client (or makes one) and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _SAFE_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", raw_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with an OpenAI-shaped 413; ``larger`` gives
    some paths (audio uploads) a higher limit."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, larger: dict[tuple[str, ...], int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = {path: limit for paths, limit in (larger or {}).items() for path in paths}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.larger.get(scope["path"], self.max_bytes)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await self._refuse(send, max_bytes)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # An HTTPException passes FastAPI's body parsing and our error handler.
                    raise HTTPException(413, f"Request body larger than {max_bytes} bytes")
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, send: Send, max_bytes: int) -> None:
        error = APIError(
            413,
            f"Request body larger than {max_bytes} bytes",
            code="request_too_large",
        )
        body = json.dumps(error.body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    headers: Any = scope.get("headers", [])
    for key, value in headers:
        if key == name:
            return str(value.decode("latin-1"))
    return None
