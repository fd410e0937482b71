"""The HTTP service and its web page: ``clipcrop serve``.

Build the app with :func:`create_app` (tests pass a ready predictor, ``clipcrop serve`` passes a
loader that runs in a background thread so that ``/ready`` answers 503 until the model is loaded).

Endpoints
    ``POST /v1/crop``        multipart ``image`` [+ ``query`` | ``image_query``] [+ ``top_k``, ``aspect``
                             (several: commas or repeated), ``size``, ``upscale``, ``keep``,
                             ``avoid_box``, ``avoid``, ``faces``: :class:`~clipcrop.crop_options.CropOptions`]
                             -> the CLI's JSON object for that image, plus ``mode`` and ``timings``.
    ``POST /v1/crop/image``  the same form [+ ``format`` jpeg|png|webp, ``strip_metadata``,
                             ``strip_icc``] -> the best crop itself, cut out of the full-resolution
                             upload (at its ``output_size`` with ``size``), with its ICC profile and
                             EXIF (orientation 1) unless stripped.
    ``POST /v1/detect``      multipart ``image`` + ``query`` | ``image_query`` [+ ``top_k``] -> the
                             ``clipcrop detect --json`` object (OWL-ViT's detections), plus ``timings``.
    ``GET /health``          liveness; ``GET /ready``: 200 once the model is loaded, 503 before.
    ``GET /v1/info``         the limits and choices the page builds its form from (max top_k,
                             upload size, query length, formats, aspect presets, largest output
                             side, whether faces work); open like /ready.
    ``GET /``                the web page (``clipcrop/static``); ``/docs`` and ``/openapi.json``.

Errors: :mod:`clipcrop.serve.errors`; the guard that checks the API key and the request size
before the body is read: :mod:`clipcrop.serve.guard`; the bounded work queue:
:mod:`clipcrop.serve.queue`; a request's checks and work: :mod:`clipcrop.serve.jobs`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.security import APIKeyHeader, HTTPBearer

from .. import __version__
from ..errors import BackboneLoadError
from ..limits import Limits
from ..settings import ENV_BACKBONE, ModelSettings
from .docs_pages import add_docs_pages
from .errors import add_error_handlers
from .guard import Guard
from .routes_status import add_page_routes, add_status_routes
from .routes_work import add_work_routes
from .state import PredictorOrLoader, ServiceState

DESCRIPTION = (
    "Conditioned smart cropping (ClipCrop, ICCV 2023): upload a photo and what you want "
    "(a text query, a query image, or nothing) and get ranked, aesthetic crops that show it. "
    'Errors are JSON: `{"error": {"code": ..., "message": ...}}`.'
)


def create_app(
    predictor_or_loader: PredictorOrLoader,
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
    service = ServiceState(predictor_or_loader, limits, api_key, on_load_error)

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
        description=DESCRIPTION,
        docs_url=None,  # FastAPI's pages load their assets from CDNs: docs_pages serves them itself
        redoc_url=None,
    )
    app.state.clipcrop = service
    add_docs_pages(app, title)
    add_error_handlers(app)
    add_page_routes(app)
    add_status_routes(app, service)
    add_work_routes(app, service, _security(api_key))
    app.add_middleware(Guard, service=service)
    return app


def _security(api_key: str | None) -> list[Any]:
    """The API key dependencies of the work routes: they only document the key in the OpenAPI
    page (the guard checks it, before the body is read)."""
    if not api_key:
        return []
    return [
        Depends(HTTPBearer(auto_error=False, description="the service's API key")),
        Depends(APIKeyHeader(name="X-API-Key", auto_error=False, description="the service's API key")),
    ]


# ---------------------------------------------------------------------------------------- workers
ENV_API_KEY = "CLIPCROP_API_KEY"


def app_from_env(on_load_error: Callable[[str], None] | None = None) -> FastAPI:
    """App factory for ``uvicorn --factory`` and ``clipcrop serve --workers N``: every worker
    process builds its own app and loads its own model from the ``CLIPCROP_*`` variables
    (:meth:`clipcrop.settings.ModelSettings.from_env`; ``on_load_error``: see :func:`create_app`)."""
    settings = ModelSettings.from_env()

    def load():
        try:
            return settings.load()
        except BackboneLoadError as exc:  # named as the operator sets it
            raise exc.with_parameter(f"{ENV_BACKBONE} (clipcrop serve --backbone)") from exc

    api_key = os.environ.get(ENV_API_KEY) or None
    return create_app(load, settings.limits, api_key=api_key, on_load_error=on_load_error)
