"""The service's open routes: the web page and its static files, ``/health``, ``/ready`` and
``/v1/info`` (open even when an API key is set, see :data:`clipcrop.serve.guard.OPEN_PATHS`)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from .info import InfoResponse, info_body
from .schema import HealthResponse, ReadyResponse, error_responses
from .state import ServiceState

STATIC_DIR = Path(__file__).parent / "static"
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def add_page_routes(app: FastAPI) -> None:
    """``GET /`` (the web page, under a strict CSP) and ``/static``."""

    @app.get("/", response_class=HTMLResponse, summary="The web page", tags=["page"])
    async def index() -> HTMLResponse:
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"), headers=PAGE_HEADERS)

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def add_status_routes(app: FastAPI, service: ServiceState) -> None:
    """``GET /health``, ``/ready`` and ``/v1/info``."""

    @app.get("/health", response_model=HealthResponse, summary="Liveness", tags=["status"],
             responses=error_responses(500))  # fmt: skip
    async def health() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get(
        "/ready",
        response_model=ReadyResponse,
        summary="Readiness: 200 once the model is loaded, 503 before",
        tags=["status"],
        responses=error_responses(500, 503),
    )
    async def ready() -> dict:
        predictor = service.require_predictor()
        return {
            "status": "ready",
            "model": service.public_model_name(predictor),
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
        responses=error_responses(500, 503),
    )
    async def info() -> dict:
        predictor = service.require_predictor()
        return info_body(
            service.limits,
            service.max_top_k(predictor),
            service.public_model_name(predictor),
            str(getattr(predictor, "mode", "")),
            __version__,
        )
