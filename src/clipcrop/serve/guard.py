"""The service's guard: a pure-ASGI middleware that checks the API key, the queue and the request
size *before* the body is read.

``Content-Length`` is checked up front, then bytes are counted while the body streams, so an
oversized upload is refused after at most the limit; the body is then replayed to the app. A
client that disconnects during the upload never reaches the app, so it never holds a worker slot.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..errors import ClipCropError, ParameterError
from .docs_pages import ASSETS_URL as DOCS_ASSETS_URL
from .errors import QueueFullError, RequestTooLargeError, UnauthorizedError, UploadTimeoutError, error_body
from .state import ServiceState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: paths that stay open when an API key is set; everything else needs the key (deny by default)
OPEN_PATHS = frozenset(
    {"/", "/health", "/ready", "/v1/info", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case) in an ASGI scope, or None."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


def is_open(scope: Scope) -> bool:
    """Whether the request's path is served without the API key."""
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path in OPEN_PATHS or path.startswith(("/static/", DOCS_ASSETS_URL + "/"))


def key_matches(scope: Scope, api_key: bytes) -> bool:
    """Whether the request carries ``api_key`` as ``Authorization: Bearer KEY`` or ``X-API-Key``."""
    given = b""
    auth = header(scope, b"authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(b" ")
        if scheme.lower() == b"bearer":
            given = token.strip()
    if not given:
        given = (header(scope, b"x-api-key") or b"").strip()
    # compare_digest even for an empty key, so timing says nothing about the length
    return hmac.compare_digest(given, api_key) and bool(given)


class Guard:
    """Pure ASGI middleware: API key, queue and body size, all before the body is read."""

    def __init__(self, app: ASGIApp, service: ServiceState) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await reject(send, refusal)
            return
        body = await self._read_body(receive, send)
        if body is None:
            return  # refused, or the client is gone mid-upload: nothing held
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(k.lower() == b"x-content-type-options" for k, _ in headers):
                    headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, replay, send_with_headers)

    def _refusal(self, scope: Scope) -> ClipCropError | None:
        """The error that refuses this request before its body is read, or None."""
        svc = self.service
        if svc.api_key is not None and not is_open(scope) and not key_matches(scope, svc.api_key):
            return UnauthorizedError("missing or wrong API key")
        if scope.get("method") == "POST" and scope.get("path", "").startswith("/v1/") and svc.queue.full:
            # shed load before reading the body: a full queue must not pile up buffered uploads
            return QueueFullError("work queue full; retry later")
        length = header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return ParameterError("Content-Length is not a number")
            if declared > svc.max_body_bytes:
                return self._too_large(declared)
        return None

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, never more than ``max_body_bytes``; None when it was refused (the
        answer is sent) or the client disconnected."""
        svc = self.service
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + svc.limits.request_timeout_s
        more = True
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.001, deadline - loop.time()))
            except asyncio.TimeoutError:
                timeout = svc.limits.request_timeout_s
                await reject(send, UploadTimeoutError(f"upload not complete within {timeout:.0f} s"))
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > svc.max_body_bytes:
                await reject(send, self._too_large(None))
                return None
            if chunk:
                chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    def _too_large(self, declared: int | None) -> RequestTooLargeError:
        limit = self.service.limits.max_file_bytes
        what = f"{declared / 1e6:.1f} MB" if declared is not None else "too large"
        # the client's message: the server's limit, not the flag or variable that set it
        return RequestTooLargeError(f"upload is {what}; the limit is {limit / 1e6:.1f} MB per image")


async def reject(send: Send, exc: ClipCropError) -> None:
    """Answer ``exc`` as the JSON error body and close the connection (the body is not read)."""
    body = json.dumps(error_body(exc.code, str(exc))).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"x-content-type-options", b"nosniff"),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in getattr(exc, "headers", {}).items()]
    await send({"type": "http.response.start", "status": exc.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
