"""The HTTP service and its web page: ``clipcrop serve``.

Build the app with :func:`create_app` (tests pass a ready predictor, ``clipcrop serve`` passes a
loader that runs in a background thread so that ``/ready`` answers 503 until the model is loaded).

Endpoints
    ``POST /v1/crop``        multipart ``image`` [+ ``query`` | ``image_query``] [+ ``top_k``, ``aspect``]
                             -> the CLI's JSON object for that image, plus ``mode`` and ``timings``.
    ``POST /v1/crop/image``  the same form [+ ``format`` jpeg|png|webp, ``strip_metadata``,
                             ``strip_icc``] -> the best crop itself, cut out of the full-resolution
                             upload, with its ICC profile and EXIF (orientation 1) unless stripped.
    ``POST /v1/detect``      multipart ``image`` + ``query`` | ``image_query`` [+ ``top_k``] -> the
                             ``clipcrop detect --json`` object (OWL-ViT's detections), plus ``timings``.
    ``GET /health``          liveness; ``GET /ready``: 200 once the model is loaded, 503 before.
    ``GET /v1/info``         the limits and choices the page builds its form from (max top_k,
                             upload size, query length, formats, aspect presets); open like /ready.
    ``GET /``                the web page (``clipcrop/static``); ``/docs`` and ``/openapi.json``.

Every error is ``{"error": {"code": "...", "message": "..."}}`` with the status declared on the
:mod:`clipcrop.errors` class (400 parameters, 413 upload too large, 415 not an image, 422 too many
pixels), or 401 (API key), 408 (upload too slow), 429 (queue full), 503 (not ready), 504 (timeout),
and a generic 500 ``internal_error`` for bugs (logged here, never a stack trace in a response).

Robustness: a pure-ASGI guard checks the API key and the request size *before* the body is read
(``Content-Length`` up front, then counted while streaming, so an oversized upload is refused
after at most the limit). Work runs in a bounded thread pool behind a FIFO queue
(``limits.max_concurrency`` running + ``limits.max_queue`` waiting, past that 429 at once); a slot
is owned by the worker thread and released when that thread ends, so a client that disconnects
or times out never leaks one.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import ClipCropError, ParameterError, QueryError
from ..io.images import decode_bytes
from ..limits import Limits
from ..ops.box_ops import parse_aspect
from ..validation import MAX_DETECTIONS, validate_query, validate_query_pair, validate_top_k
from .docs_pages import ASSETS_URL as DOCS_ASSETS_URL
from .docs_pages import add_docs_pages
from .info import DEFAULT_TOP_K, InfoResponse, info_body

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
#: room for the form fields and multipart headers next to the two files
FORM_OVERHEAD_BYTES = 64 * 1024
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_STATUS_CODES = {
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


# ---------------------------------------------------------------------------------------- errors
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
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


# ---------------------------------------------------------------------------------------- schema
class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable error code, e.g. unreadable_image, queue_full")
    message: str = Field(description="what went wrong and what to change, for people")


class ErrorBody(BaseModel):
    """Body of every 4xx/5xx answer."""

    error: ErrorDetail


class CropItem(BaseModel):
    box: list[int] = Field(description="x0, y0, x1, y1 in pixels of the upright original; x1/y1 exclusive")
    score: float = Field(description="quality score in [0, 1]")


class CropResponse(BaseModel):
    """The CLI's ``--json`` object for the uploaded image, plus ``mode`` and ``timings``."""

    image: str = Field(description="the uploaded file name")
    width: int
    height: int
    query: str | None = Field(description="the text query after cleaning, or null")
    image_query: str | None = Field(None, description="file name of the query image, when one was sent")
    crops: list[CropItem] = Field(description="ranked crops, best first")
    error: str | None = Field(description="always null in a 200 answer")
    mode: str = Field(description="trained or training-free")
    union_box: list[int] = Field(description="union of the boxes the condition selected (b_u)")
    keywords: list[str]
    timings: dict[str, float] = Field(description="seconds per stage")


class DetectionItem(BaseModel):
    box: list[float] = Field(description="x0, y0, x1, y1: float pixels of the upright original, clamped")
    score: float = Field(description="OWL-ViT's probability, sigmoid(logit)")
    logit: float
    token: int = Field(description="index of the image token that predicts this box")


class DetectResponse(BaseModel):
    """``clipcrop detect --json``'s object for the uploaded image, plus ``timings``."""

    image: str = Field(description="the uploaded file name")
    width: int
    height: int
    query: str | None = Field(description="the text query after cleaning (used whole), or null")
    image_query: str | None = Field(None, description="file name of the query image, when one was sent")
    query_token: int | None = Field(None, description="the query image's token whose embedding was used")
    truncated: bool | None = Field(None, description="the text was longer than OWL-ViT reads (text queries)")
    detections: list[DetectionItem] = Field(description="best first")
    error: str | None = Field(description="always null in a 200 answer")
    timings: dict[str, float] = Field(description="seconds per stage")


class HealthResponse(BaseModel):
    status: str
    version: str


class ReadyResponse(BaseModel):
    status: str
    model: str
    mode: str
    max_top_k: int
    running: int = Field(description="requests being processed now")
    waiting: int = Field(description="requests waiting for a worker")
    max_concurrency: int
    max_queue: int


_ERROR_TEXT = {
    400: "Bad parameters (missing image, bad top_k or aspect, empty query, both query and image_query; "
    "for /v1/detect also neither)",
    401: "API key missing or wrong (send Authorization: Bearer KEY or X-API-Key: KEY)",
    408: "The upload was too slow",
    413: "Upload larger than the limit",
    415: "Not an image, or a refused format (SVG, PDF, ...), judged by its bytes",
    422: "Image has more pixels than the limit",
    429: "Work queue full; retry after Retry-After seconds",
    500: "Internal error (a bug; details are in the server log)",
    503: "Model not loaded yet",
    504: "The request took longer than the time limit",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorBody, "description": _ERROR_TEXT[s]} for s in statuses}


# ---------------------------------------------------------------------------------------- queue
class _Waiter:
    __slots__ = ("future", "loop", "granted")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()
        self.granted = False


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class WorkQueue:
    """``max_running`` jobs in worker threads, ``max_waiting`` more waiting in FIFO order.

    A slot belongs to the job's worker thread and is released when the thread finishes, whatever
    happened to the request meanwhile (client gone, timeout, cancellation). State is guarded by a
    threading lock so that release may run on any thread and with any event loop.
    """

    def __init__(self, max_running: int, max_waiting: int) -> None:
        self.max_running = max(1, int(max_running))
        self.max_waiting = max(0, int(max_waiting))
        self.running = 0
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(self.max_running, thread_name_prefix="clipcrop-worker")

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def full(self) -> bool:
        """True when a new job would be refused (every slot running and the queue full)."""
        return self.running >= self.max_running and len(self._waiters) >= self.max_waiting

    async def _acquire(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.running < self.max_running and not self._waiters:
                self.running += 1
                return
            if len(self._waiters) >= self.max_waiting:
                raise QueueFullError(
                    f"the service is busy ({self.running} running, {len(self._waiters)} waiting); "
                    "retry in a moment"
                )
            waiter = _Waiter(loop)
            self._waiters.append(waiter)
        try:
            await asyncio.wait({waiter.future}, timeout=timeout)
        except BaseException:  # cancelled (client gone, shutdown): a slot granted meanwhile goes on
            if self._settle(waiter):
                self._release()
            raise
        if not self._settle(waiter):
            raise RequestTimeoutError(f"no worker became free within {timeout:.0f} s")

    def _settle(self, waiter: _Waiter) -> bool:
        """True when ``waiter`` was granted a slot; otherwise take it out of the queue."""
        with self._lock:
            if waiter.granted:
                return True
            if waiter in self._waiters:  # absent when its loop was gone as a slot came free
                self._waiters.remove(waiter)
        waiter.future.cancel()
        return False

    def _release(self) -> None:
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                try:
                    waiter.loop.call_soon_threadsafe(_wake, waiter.future)
                except RuntimeError:  # its event loop is gone: skip it
                    continue
                waiter.granted = True  # the slot passes to the waiter; running stays the same
                return
            self.running -= 1

    async def run(self, fn: Callable[[], Any], timeout: float) -> Any:
        """Run ``fn`` in a worker thread; QueueFullError / RequestTimeoutError as documented."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._acquire(timeout)
        acquired_at = time.perf_counter()

        def job() -> Any:
            try:
                return fn()
            finally:
                self._release()

        try:
            future = loop.run_in_executor(self._executor, job)
        except BaseException:
            self._release()
            raise
        # an abandoned future (timeout, client gone) must not log "exception never retrieved"
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(0.001, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise RequestTimeoutError(
                f"the request took longer than {timeout:.0f} s "
                f"({time.perf_counter() - acquired_at:.1f} s of work)"
            ) from None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------------------- guard
def _header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


#: paths that stay open when an API key is set; everything else needs the key (deny by default)
OPEN_PATHS = frozenset(
    {"/", "/health", "/ready", "/v1/info", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)


def _is_open(scope: dict) -> bool:
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path in OPEN_PATHS or path.startswith(("/static/", DOCS_ASSETS_URL + "/"))


class _Guard:
    """Pure ASGI middleware: API key and body size, both before the body is read.

    The body is read here in full but never past ``max_body`` bytes (Content-Length is checked
    first, then bytes are counted as they stream), then replayed to the app; a client that
    disconnects during the upload never reaches the app, so it never holds a worker slot.
    """

    def __init__(self, app: Any, service: _Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        svc = self.service
        if svc.api_key is not None and not _is_open(scope) and not svc.authorized(scope):
            await self._reject(send, UnauthorizedError("missing or wrong API key"))
            return
        if scope.get("method") == "POST" and scope.get("path", "").startswith("/v1/") and svc.queue.full:
            # shed load before reading the body: a full queue must not pile up buffered uploads
            await self._reject(send, QueueFullError("work queue full; retry later"))
            return
        max_body = svc.max_body_bytes
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await self._reject(send, ParameterError("Content-Length is not a number"))
                return
            if declared > max_body:
                await self._reject(send, self._too_large(declared))
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + svc.limits.request_timeout_s
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.001, deadline - loop.time()))
            except asyncio.TimeoutError:
                await self._reject(
                    send,
                    UploadTimeoutError(f"upload not complete within {svc.limits.request_timeout_s:.0f} s"),
                )
                return
            if message["type"] == "http.disconnect":
                return  # client gone mid-upload: nothing to answer, nothing held
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body:
                await self._reject(send, self._too_large(None))
                return
            if chunk:
                chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(k.lower() == b"x-content-type-options" for k, _ in headers):
                    headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, replay, send_with_headers)

    def _too_large(self, declared: int | None) -> RequestTooLargeError:
        limit = self.service.limits.max_file_bytes
        what = f"{declared / 1e6:.1f} MB" if declared is not None else "too large"
        return RequestTooLargeError(
            f"upload is {what}; the limit is {limit / 1e6:.1f} MB per image (--max-upload-mb)"
        )

    @staticmethod
    async def _reject(send: Callable, exc: ClipCropError) -> None:
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


# ---------------------------------------------------------------------------------------- state
class _Service:
    def __init__(
        self,
        predictor_or_loader: Any,
        limits: Limits | None,
        api_key: str | None,
        on_load_error: Callable[[str], None] | None = None,
    ) -> None:
        self.on_load_error = on_load_error
        if callable(predictor_or_loader) and not hasattr(predictor_or_loader, "crop"):
            self.loader: Callable[[], Any] | None = predictor_or_loader
            self.predictor = None
        else:
            self.loader = None
            self.predictor = predictor_or_loader
        if limits is None:
            limits = getattr(self.predictor, "limits", None) or Limits.from_env()
        self.limits = limits
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.max_body_bytes = 2 * limits.max_file_bytes + FORM_OVERHEAD_BYTES
        self.queue = WorkQueue(limits.max_concurrency, limits.max_queue)
        self.load_error: str | None = None
        self._load_thread: threading.Thread | None = None

    # -- model loading
    def start_loading(self) -> None:
        if self.predictor is not None or self.loader is None or self._load_thread is not None:
            return
        self._load_thread = threading.Thread(target=self._load, name="clipcrop-load", daemon=True)
        self._load_thread.start()

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            predictor = self.loader()  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - reported by /ready and on_load_error, logged here
            self._failed(str(exc) if isinstance(exc, ClipCropError) else f"{type(exc).__name__}: {exc}")
            return
        if predictor is None:
            self._failed("the model loader returned nothing")
            return
        self.predictor = predictor
        logger.info("model ready after %.1f s", time.perf_counter() - t0)

    def _failed(self, message: str) -> None:
        """The model cannot load: /ready says why from now on, and ``on_load_error`` (``clipcrop
        serve``: stop the server and exit non-zero) is told; without one, the log says it."""
        self.load_error = message
        if self.on_load_error is None:
            logger.error("model failed to load: %s", message)
            return
        logger.info("model failed to load: %s", message)
        self.on_load_error(message)

    def require_predictor(self) -> Any:
        if self.predictor is None:
            if self.load_error:
                raise NotReadyError(f"the model failed to load: {self.load_error}")
            raise NotReadyError("the model is still loading; retry in a few seconds")
        return self.predictor

    def max_top_k(self, predictor: Any) -> int:
        m = int(predictor.max_top_k)
        return min(m, self.limits.max_top_k) if self.limits.max_top_k else m

    # -- auth
    def authorized(self, scope: dict) -> bool:
        assert self.api_key is not None
        given = b""
        auth = _header(scope, b"authorization")
        if auth is not None:
            scheme, _, token = auth.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                given = token.strip()
        if not given:
            given = (_header(scope, b"x-api-key") or b"").strip()
        # compare_digest even for an empty key, so timing says nothing about the length
        return hmac.compare_digest(given, self.api_key) and bool(given)


def _public_model_name(name: str) -> str:
    """A Hub id as is; a local folder by its last part only (/ready is open: no server paths)."""
    path = Path(name)
    return path.name if path.is_absolute() or path.exists() else name


# ---------------------------------------------------------------------------------------- work
class _Job:
    """One crop request, validated cheaply; :meth:`run` does the expensive part in a worker."""

    def __init__(
        self,
        service: _Service,
        predictor: Any,
        data: bytes,
        name: str,
        query: str | None,
        query_data: bytes | None,
        query_name: str | None,
        top_k: int,
        aspect: str | None,
    ) -> None:
        self.service, self.predictor = service, predictor
        self.data, self.name = data, name
        self.query, self.query_data, self.query_name = query, query_data, query_name
        self.top_k, self.aspect = top_k, aspect

    def decode(self) -> tuple[Any, Any, float]:
        """The upload and the query image (or None) decoded, and the seconds that took."""
        limits = self.service.limits
        t0 = time.perf_counter()
        loaded = decode_bytes(self.data, limits, name=self.name)
        query_image = (
            decode_bytes(self.query_data, limits, name=self.query_name or "image_query")
            if self.query_data is not None
            else None
        )
        return loaded, query_image, time.perf_counter() - t0

    def detect_json(self) -> dict:
        """``POST /v1/detect``'s answer: :meth:`ClipCrop.detect`'s ``to_dict()`` plus ``timings``."""
        t0 = time.perf_counter()
        loaded, query_image, decoded = self.decode()
        result = self.predictor.detect(loaded, query=self.query, image_query=query_image, top_k=self.top_k)
        timings = {**result.timings, "decode": decoded, "total": time.perf_counter() - t0}
        return {**result.to_dict(), "timings": {k: round(v, 6) for k, v in timings.items()}}

    def crop(self):
        loaded, query_image, decoded = self.decode()
        result = self.predictor.crop(
            loaded, query=self.query, image_query=query_image, top_k=self.top_k, aspect_ratio=self.aspect
        )
        result.timings["decode"] = decoded  # the predictor got decoded images: report our decode
        return loaded, result

    def crop_json(self) -> dict:
        t0 = time.perf_counter()
        _, result = self.crop()
        out = result.to_dict(extended=True)
        out["image"] = self.name
        out["timings"]["total"] = round(time.perf_counter() - t0, 6)
        return out

    def crop_picture(
        self, fmt: str, strip_metadata: bool = False, strip_icc: bool = False
    ) -> tuple[bytes, str, Any]:
        """The best crop encoded as ``fmt``, with the upload's ICC profile and EXIF (orientation 1)
        unless stripped (see :mod:`clipcrop.io.metadata`)."""
        from ..io.render import cut, encode_image, metadata_for

        loaded, result = self.crop()
        full = loaded
        if loaded.image.size != (loaded.width, loaded.height):  # reduced while decoding: cut from full
            full = decode_bytes(self.data, self.service.limits, name=self.name, reduce=False)
        box = result[0].box if len(result) else (0, 0, result.width, result.height)
        picture = cut(full.image, box, (result.width, result.height))
        meta = metadata_for(full, picture.size, strip_metadata=strip_metadata, strip_icc=strip_icc)
        data, media = encode_image(picture, fmt, metadata=meta)
        return data, media, result


async def _read_upload(upload: StarletteUploadFile, limit: int, what: str) -> bytes:
    from ..errors import FileTooLargeError

    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise FileTooLargeError(f"{what}: upload is above the limit of {limit / 1e6:.1f} MB")
    return data


def _is_absent(upload: Any) -> bool:
    """A browser sends an unpicked file input as an empty part with an empty file name."""
    return upload is None or (
        isinstance(upload, StarletteUploadFile) and not upload.filename and (upload.size or 0) == 0
    )


def _display_name(upload: StarletteUploadFile, default: str) -> str:
    name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:255] or default


async def _prepare(
    service: _Service,
    request: Request,
    image: Any,
    image_query: Any,
    top_k: Any,
    aspect: Any,
    *,
    detect: bool = False,
) -> _Job:
    """Check a crop form (``detect``: a detect form, which needs a query and has its own top_k
    limit) and read its uploads; every parameter error is raised before the first byte is read."""
    predictor = service.require_predictor()
    form = await request.form()  # already parsed by FastAPI: the raw values, empty strings included
    if _is_absent(image) or not isinstance(image, StarletteUploadFile):
        raise ParameterError("image: an image file is required (multipart field 'image')")
    queries = form.getlist("query")
    if len(queries) > 1:
        raise ParameterError("query: give at most one text query")
    raw_query = queries[0] if queries else None
    if raw_query is not None and not isinstance(raw_query, str):
        raise ParameterError("query: must be a text field, not a file")
    if _is_absent(image_query):
        image_query = None
    elif not isinstance(image_query, StarletteUploadFile):
        raise ParameterError("image_query: must be a file")
    validate_query_pair(raw_query, image_query)
    if detect and raw_query is None and image_query is None:
        raise QueryError("detect needs a text query (field 'query') or an image query (file 'image_query')")
    query = validate_query(raw_query, service.limits)
    top_k = validate_top_k(top_k, MAX_DETECTIONS if detect else service.max_top_k(predictor))
    aspect_text = aspect if isinstance(aspect, str) and aspect.strip() else None
    parse_aspect(aspect_text)  # ParameterError now, before any work
    limit = service.limits.max_file_bytes
    data = await _read_upload(image, limit, "image")
    name = _display_name(image, "upload")
    query_data = query_name = None
    if image_query is not None:
        query_data = await _read_upload(image_query, limit, "image_query")
        query_name = _display_name(image_query, "image_query")
    return _Job(service, predictor, data, name, query, query_data, query_name, top_k, aspect_text)


# ---------------------------------------------------------------------------------------- app
# form fields (module level: FastAPI resolves the postponed annotations in this module's globals)
ImageField = Annotated[UploadFile, File(description="the photo to crop (JPEG, PNG, WebP, GIF, BMP, TIFF)")]
QueryField = Annotated[
    str | None, Form(description="what the crop should show, in words (or give image_query, or neither)")
]
QueryImageField = Annotated[
    UploadFile | None, File(description="a reference image of what the crop should show")
]
DetectQueryField = Annotated[
    str | None, Form(description="what to detect, in words, used whole (or give image_query)")
]
DetectTopKField = Annotated[
    int, Form(ge=1, le=MAX_DETECTIONS, description=f"number of detections (1 .. {MAX_DETECTIONS})")
]
TopKField = Annotated[
    int, Form(ge=1, le=1000, description="number of crops (1 .. max_top_k, which /v1/info and /ready report)")
]
AspectField = Annotated[
    str | None,
    Form(
        description="exact aspect ratio W:H of every crop, e.g. 1:1, 16:9; empty or 'free' = any",
        examples=["1:1", "16:9"],
    ),
]

FormatField = Annotated[Literal["jpeg", "png", "webp"], Form(description="picture format of the answer")]
StripMetadataField = Annotated[
    bool,
    Form(description="leave out the upload's EXIF (camera, date, GPS, copyright); its ICC profile stays"),
]
StripIccField = Annotated[bool, Form(description="leave out the upload's ICC colour profile")]


def create_app(
    predictor_or_loader: Any,
    limits: Limits | None = None,
    api_key: str | None = None,
    *,
    title: str = "ClipCrop",
    on_load_error: Callable[[str], None] | None = None,
) -> FastAPI:
    """The FastAPI app.

    Args:
        predictor_or_loader: a loaded :class:`~clipcrop.predictor.ClipCrop`, or a no-argument
            callable returning one, called in a background thread at startup (``/ready`` says 503
            until it returns).
        limits: the limits to enforce (default: the predictor's, else :meth:`Limits.from_env`).
        api_key: when set, every path but the page, its static files, ``/health``, ``/ready`` and
            the API docs needs ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.
        on_load_error: called (in the loader's thread) with the message when the loader fails, so
            that the process can stop instead of serving 503 forever; ``/ready`` reports it too.
    """
    service = _Service(predictor_or_loader, limits, api_key, on_load_error)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start_loading()
        try:
            yield
        finally:
            service.queue.shutdown()

    app = FastAPI(
        title=title,
        version=__version__,
        lifespan=lifespan,
        description=(
            "Conditioned smart cropping (ClipCrop, ICCV 2023): upload a photo and what you want "
            "(a text query, a query image, or nothing) and get ranked, aesthetic crops that show it. "
            'Errors are JSON: `{"error": {"code": ..., "message": ...}}`.'
        ),
        docs_url=None,  # FastAPI's pages load their assets from CDNs: docs_pages serves them itself
        redoc_url=None,
    )
    app.state.clipcrop = service
    add_docs_pages(app, title)

    security: list = []
    if api_key:
        security = [
            Depends(HTTPBearer(auto_error=False, description="the service's API key")),
            Depends(APIKeyHeader(name="X-API-Key", auto_error=False, description="the service's API key")),
        ]

    # -- error mapping: one body shape for everything
    @app.exception_handler(ClipCropError)
    async def _clipcrop_error(request: Request, exc: ClipCropError) -> JSONResponse:
        status = exc.http_status if 400 <= exc.http_status < 600 else 500
        if status >= 500 and not isinstance(exc, ServiceError):
            logger.error("server-side error on %s: %s", request.url.path, exc)
            return error_response(500, "internal_error", "internal error; see the server log")
        return error_response(status, exc.code, str(exc), getattr(exc, "headers", None) or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "header")]
            field = ".".join(loc) or "request"
            msg = "is required" if err.get("type") == "missing" else str(err.get("msg", "is invalid"))
            parts.append(f"{field}: {msg}")
        missing_image = any(
            e.get("type") == "missing" and tuple(e.get("loc", ()))[-1:] == ("image",) for e in exc.errors()
        )
        if missing_image:
            parts = ["image: an image file is required (multipart field 'image')"]
        return error_response(400, "invalid_parameter", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        code = _STATUS_CODES.get(status, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if status == 400 and "parsing the body" in message:
            code, message = "malformed_body", "the request body is not a valid multipart form"
        return error_response(status, code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error; see the server log")

    # -- pages
    @app.get("/", response_class=HTMLResponse, summary="The web page", tags=["page"])
    async def index() -> HTMLResponse:
        html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(
            html,
            headers={
                "Content-Security-Policy": PAGE_CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY",
                "Cache-Control": "no-cache",
            },
        )

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health", response_model=HealthResponse, summary="Liveness", tags=["status"],
             responses=_errors(500))  # fmt: skip
    async def health() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get(
        "/ready",
        response_model=ReadyResponse,
        summary="Readiness: 200 once the model is loaded, 503 before",
        tags=["status"],
        responses=_errors(500, 503),
    )
    async def ready() -> dict:
        predictor = service.require_predictor()
        return {
            "status": "ready",
            "model": _public_model_name(str(getattr(predictor, "name", ""))),
            "mode": str(getattr(predictor, "mode", "")),
            "max_top_k": service.max_top_k(predictor),
            "running": service.queue.running,
            "waiting": service.queue.waiting,
            "max_concurrency": service.queue.max_running,
            "max_queue": service.queue.max_waiting,
        }

    @app.get(
        "/v1/info",
        response_model=InfoResponse,
        summary="Limits and choices for clients: max top_k, upload size, query length, formats, aspect presets",
        tags=["status"],
        responses=_errors(500, 503),
    )
    async def info() -> dict:
        predictor = service.require_predictor()
        return info_body(
            service.limits,
            service.max_top_k(predictor),
            _public_model_name(str(getattr(predictor, "name", ""))),
            str(getattr(predictor, "mode", "")),
            __version__,
        )

    crop_errors = _errors(400, 401, 408, 413, 415, 422, 429, 500, 503, 504)

    @app.post(
        "/v1/crop",
        response_model=CropResponse,
        summary="Ranked crops of an uploaded image (JSON)",
        tags=["crop"],
        responses=crop_errors,
        dependencies=security,
    )
    async def crop(
        request: Request,
        image: ImageField,
        query: QueryField = None,
        image_query: QueryImageField = None,
        top_k: TopKField = DEFAULT_TOP_K,
        aspect: AspectField = None,
    ) -> JSONResponse:
        job = await _prepare(service, request, image, image_query, top_k, aspect)
        out = await service.queue.run(job.crop_json, service.limits.request_timeout_s)
        return JSONResponse(out)

    @app.post(
        "/v1/crop/image",
        summary="The best crop itself, cut at full resolution (JPEG, PNG or WebP)",
        tags=["crop"],
        response_class=Response,
        responses={
            200: {
                "description": "the best crop; headers X-Crop-Box (x0,y0,x1,y1) and X-Crop-Score",
                "content": {
                    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "image/webp": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            **crop_errors,
        },
        dependencies=security,
    )
    async def crop_image(
        request: Request,
        image: ImageField,
        query: QueryField = None,
        image_query: QueryImageField = None,
        top_k: TopKField = DEFAULT_TOP_K,
        aspect: AspectField = None,
        format: FormatField = "jpeg",
        strip_metadata: StripMetadataField = False,
        strip_icc: StripIccField = False,
    ) -> Response:
        job = await _prepare(service, request, image, image_query, top_k, aspect)
        data, media, result = await service.queue.run(
            lambda: job.crop_picture(format, strip_metadata, strip_icc), service.limits.request_timeout_s
        )
        headers = {"Cache-Control": "no-store"}
        if len(result):
            headers["X-Crop-Box"] = ",".join(str(v) for v in result[0].box)
            headers["X-Crop-Score"] = f"{result[0].score:.6f}"
        return Response(data, media_type=media, headers=headers)

    @app.post(
        "/v1/detect",
        response_model=DetectResponse,
        summary="OWL-ViT's detections in an uploaded image for a text or image query (JSON)",
        tags=["detect"],
        responses=crop_errors,
        dependencies=security,
    )
    async def detect(
        request: Request,
        image: ImageField,
        query: DetectQueryField = None,
        image_query: QueryImageField = None,
        top_k: DetectTopKField = DEFAULT_TOP_K,
    ) -> JSONResponse:
        job = await _prepare(service, request, image, image_query, top_k, None, detect=True)
        out = await service.queue.run(job.detect_json, service.limits.request_timeout_s)
        return JSONResponse(out)

    app.add_middleware(_Guard, service=service)
    return app


# ---------------------------------------------------------------------------------------- workers
ENV_DEVICE = "CLIPCROP_DEVICE"
ENV_PRECISION = "CLIPCROP_PRECISION"
ENV_QUANTIZE = "CLIPCROP_QUANTIZE"
#: ``serve --backbone``: a trained checkpoint's backbone, instead of the one its config names
ENV_BACKBONE = "CLIPCROP_BACKBONE"
ENV_API_KEY = "CLIPCROP_API_KEY"


def app_from_env(on_load_error: Callable[[str], None] | None = None) -> FastAPI:
    """App factory for ``uvicorn --factory`` and ``clipcrop serve --workers N``: every worker
    process builds its own app and loads its own model from ``CLIPCROP_*`` variables
    (``on_load_error``: see :func:`create_app`)."""
    limits = Limits.from_env()

    def load():
        import argparse

        from ..cli.crop import load_predictor

        args = argparse.Namespace(
            model=os.environ.get("CLIPCROP_MODEL") or None,
            device=os.environ.get(ENV_DEVICE, "cpu"),
            precision=os.environ.get(ENV_PRECISION, "fp32"),
            quantize=os.environ.get(ENV_QUANTIZE) or None,
            backbone=os.environ.get(ENV_BACKBONE) or None,
            max_megapixels=None,  # CLIPCROP_MAX_MEGAPIXELS is read by Limits.from_env
        )
        return load_predictor(args)

    return create_app(load, limits, api_key=os.environ.get(ENV_API_KEY) or None, on_load_error=on_load_error)
