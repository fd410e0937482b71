"""/docs and /redoc are served with their assets from the service: no page names another host."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from clipcrop.limits import Limits
from clipcrop.serve.app import create_app
from clipcrop.serve.docs_pages import ASSETS_URL

PAGES = ("/", "/docs", "/redoc", "/docs/oauth2-redirect")
#: an absolute or protocol-relative URL in an attribute or a script string
EXTERNAL = re.compile(r"""(?:https?:)?//[\w.-]+\.[a-z]{2,}|https?://""", re.IGNORECASE)


@pytest.fixture(scope="module")
def client(tiny_cc):
    with TestClient(create_app(tiny_cc, Limits(), api_key="docs-key")) as c:
        yield c


@pytest.mark.parametrize("path", PAGES)
def test_no_page_links_another_host(client, path):
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    found = EXTERNAL.findall(r.text)
    assert found == [], found


def test_docs_load_their_assets_from_the_service_without_a_key(client):
    html = client.get("/docs").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(assets) == sorted(
        f"{ASSETS_URL}/{name}" for name in ("swagger-ui.css", "favicon.png", "swagger-ui-bundle.js")
    )
    assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io
    for url in [*assets, f"{ASSETS_URL}/redoc.standalone.js"]:
        r = client.get(url)  # open like the pages themselves, although the service has a key
        assert r.status_code == 200 and len(r.content) > 1000, url
    assert client.get("/redoc").text.count(f'src="{ASSETS_URL}/redoc.standalone.js"') == 1
    assert "fonts.googleapis" not in client.get("/redoc").text
    assert client.post("/v1/crop").status_code == 401  # the API itself still needs the key
    for page in ("/docs", "/redoc"):  # and the browser is told to load nothing from elsewhere
        csp = client.get(page).headers["content-security-policy"]
        assert "default-src 'self'" in csp and "img-src 'self' data:;" in csp and "http" not in csp
