"""A bound on every request body, counted as it is read: a chunked body (no Content-Length) cannot slip past.

Starlette's own RequestBodyLimitMiddleware answers a too-large Content-Length with a plain-text 413 in place of
whatever the app answered; this one answers with the OpenAI error body like every other error.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelgen.service.api.errors import error_body


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(413, f"The request body is larger than {self.max_bytes} bytes.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:  # refused before a byte of it is read
            e = self._too_large()
            response = JSONResponse(error_body(413, e.detail, code="request_too_large"), 413)
            return await response(scope, receive, send)
        read = 0

        async def bounded() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.max_bytes:  # raised into whatever reads the body: the app's handler answers it
                    raise self._too_large()
            return message

        await self.app(scope, bounded, send)
