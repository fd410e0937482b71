"""The service's API documentation pages, with every asset served by the service itself.

FastAPI's own ``/docs`` (Swagger UI) and ``/redoc`` pages load their JavaScript, CSS, favicon and
(ReDoc) fonts from public CDNs, so on a machine without internet access they are blank. Here the
same pages point at files of the ``fastapi-offline`` package (installed with the ``serve``
extra), mounted under :data:`ASSETS_URL`; no page the service returns names another host.
Swagger UI's online spec validator (a badge fetched from validator.swagger.io) is switched off
for the same reason, and both pages carry a Content-Security-Policy that lets the browser load
nothing from elsewhere (ReDoc's bundle still asks for its "by Redocly" logo on a CDN: refused,
and ReDoc then leaves the logo out).

Without the package the two pages are left out (404) rather than served blank.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

logger = logging.getLogger(__name__)

#: where the documentation assets are mounted (open even when the service needs an API key)
ASSETS_URL = "/docs/assets"
#: files the pages load from :data:`ASSETS_URL`
SWAGGER_JS, SWAGGER_CSS, REDOC_JS, FAVICON = (
    "swagger-ui-bundle.js",
    "swagger-ui.css",
    "redoc.standalone.js",
    "favicon.png",
)
#: the pages' inline start-up script and the bundles' inline styles are allowed; other hosts are not
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _self_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


def assets_dir() -> Path | None:
    """The installed folder holding Swagger UI's and ReDoc's files, or None when it is missing."""
    try:
        folder = Path(str(resources.files("fastapi_offline") / "static"))
    except ModuleNotFoundError:
        return None
    needed = (SWAGGER_JS, SWAGGER_CSS, REDOC_JS, FAVICON)
    return folder if all((folder / name).is_file() for name in needed) else None


def add_docs_pages(app: FastAPI, title: str) -> None:
    """Add ``/docs``, ``/docs/oauth2-redirect`` and ``/redoc`` to ``app`` (built with
    ``docs_url=None, redoc_url=None``), their assets served from :func:`assets_dir`."""
    folder = assets_dir()
    if folder is None:
        logger.warning(
            "fastapi-offline is not installed: /docs and /redoc are off (pip install clipcrop[serve])"
        )
        return
    app.mount(ASSETS_URL, StaticFiles(directory=folder), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{title} - API documentation",
            oauth2_redirect_url=root + "/docs/oauth2-redirect",
            swagger_js_url=f"{root}{ASSETS_URL}/{SWAGGER_JS}",
            swagger_css_url=f"{root}{ASSETS_URL}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{root}{ASSETS_URL}/{FAVICON}",
            swagger_ui_parameters={"validatorUrl": None},
        )
        return _self_only(page)

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return _self_only(get_swagger_ui_oauth2_redirect_html())

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{title} - API reference",
            redoc_js_url=f"{root}{ASSETS_URL}/{REDOC_JS}",
            redoc_favicon_url=f"{root}{ASSETS_URL}/{FAVICON}",
            with_google_fonts=False,
        )
        return _self_only(page)
