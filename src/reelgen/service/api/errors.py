"""Every error leaves the service in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match

from reelgen.service.tenants import Refused

log = logging.getLogger(__name__)

# OpenAI's error types by status: clients (the openai SDK among them) switch on status, then on code
_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    @classmethod
    def invalid(cls, message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
        return cls(400, message, param=param, code=code)

    @classmethod
    def not_found(cls, video_id: str) -> APIError:
        return cls(404, f"No video found with id '{video_id}'.", param="video_id", code="video_not_found")

    @classmethod
    def from_validation(cls, errors: list[dict]) -> APIError:
        """The first of pydantic's errors, worded as OpenAI words them, with the offending field as `param`."""
        first = errors[0]
        # drop FastAPI's location prefix ("body", "query", "path") and pydantic's union-branch names
        loc = [str(part) for part in first["loc"] if part not in ("body", "query", "path", "header")]
        param = ".".join(loc) or None
        if first["type"] == "extra_forbidden":
            return cls.invalid(f"Unknown parameter: '{param}'.", param, code="unknown_parameter")
        if first["type"] == "missing":
            return cls.invalid(f"Missing required parameter: '{param}'.", param, code="missing_required_parameter")
        if first["type"] in ("json_invalid", "model_type", "model_attributes_type", "dict_type") and param is None:
            return cls.invalid(f"The request body is not a valid JSON object: {first['msg']}.", code="invalid_json")
        return cls.invalid(f"Invalid '{param}': {first['msg']}." if param else f"{first['msg']}.", param)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        return JSONResponse(error_body(e.status, e.message, e.param, e.code), e.status, headers=e.headers)

    @app.exception_handler(Refused)
    async def _refused(_: Request, e: Refused) -> JSONResponse:
        headers = {"Retry-After": str(math.ceil(e.retry_after))} if e.retry_after is not None else None
        return JSONResponse(error_body(e.status, e.message, code=e.code), e.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        # OpenAI answers a bad parameter with 400, not FastAPI's default 422
        return await _api_error(request, APIError.from_validation(list(e.errors())))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, e: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(e.status_code)
        headers = dict(e.headers or {})
        if e.status_code == 405:
            # Starlette names the methods of the first route on the path only; FastAPI has a route per method
            headers["Allow"] = ", ".join(sorted({
                method for route in request.app.routes if isinstance(route, APIRoute)
                and route.matches(request.scope)[0] != Match.NONE for method in route.methods}))
        return JSONResponse(error_body(e.status_code, str(e.detail), code=code), e.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body(500, "The server had an error while processing your request."), 500)
