"""The service's errors and the one body shape every error answer has.

Every error is ``{"error": {"code": "...", "message": "..."}}`` with the status declared on the
:mod:`clipcrop.errors` class (400 parameters, 413 upload too large, 415 not an image, 422 too many
pixels), or one of the service's own below: 401 (API key), 408 (upload too slow), 429 (queue full),
503 (not ready), 504 (timeout). Anything else is a bug: a generic 500 ``internal_error``, logged
here, never a stack trace in a response.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ClipCropError

logger = logging.getLogger(__name__)

#: error codes of the statuses Starlette raises itself (unknown path, wrong method, ...)
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    413: "file_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "queue_full",
    500: "internal_error",
    503: "not_ready",
    504: "timeout",
}


class ServiceError(ClipCropError):
    """Errors that only the service raises (the rest come from :mod:`clipcrop.errors`)."""

    headers: dict[str, str] = {}


class UnauthorizedError(ServiceError):
    code = "unauthorized"
    http_status = 401
    headers = {"WWW-Authenticate": 'Bearer realm="clipcrop"'}


class RequestTooLargeError(ServiceError):
    code = "file_too_large"
    http_status = 413


class UploadTimeoutError(ServiceError):
    code = "request_timeout"
    http_status = 408


class QueueFullError(ServiceError):
    code = "queue_full"
    http_status = 429
    headers = {"Retry-After": "1"}


class NotReadyError(ServiceError):
    code = "not_ready"
    http_status = 503
    headers = {"Retry-After": "5"}


class RequestTimeoutError(ServiceError):
    code = "timeout"
    http_status = 504


def error_body(code: str, message: str) -> dict:
    """The body of every error answer."""
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def validation_message(errors: list[dict]) -> str:
    """One line for FastAPI's form validation errors (at most five), naming the fields."""
    if any(e.get("type") == "missing" and tuple(e.get("loc", ()))[-1:] == ("image",) for e in errors):
        return "image: an image file is required (multipart field 'image')"
    parts = []
    for err in errors[:5]:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "header")]
        field = ".".join(loc) or "request"
        msg = "is required" if err.get("type") == "missing" else str(err.get("msg", "is invalid"))
        parts.append(f"{field}: {msg}")
    return "; ".join(parts) or "invalid request"


def add_error_handlers(app: FastAPI) -> None:
    """Map every exception to the one body shape (see the module docstring)."""

    @app.exception_handler(ClipCropError)
    async def _clipcrop_error(request: Request, exc: ClipCropError) -> JSONResponse:
        status = exc.http_status if 400 <= exc.http_status < 600 else 500
        if status >= 500 and not isinstance(exc, ServiceError):
            logger.error("server-side error on %s: %s", request.url.path, exc)
            return error_response(500, "internal_error", "internal error; see the server log")
        return error_response(status, exc.code, str(exc), getattr(exc, "headers", None) or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "invalid_parameter", validation_message(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        code = STATUS_CODES.get(status, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if status == 400 and "parsing the body" in message:
            code, message = "malformed_body", "the request body is not a valid multipart form"
        return error_response(status, code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error; see the server log")
