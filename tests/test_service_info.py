"""GET /v1/info: the limits the web page builds its form from are the ones the service enforces."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from clipcrop.limits import Limits
from clipcrop.ops.aspect import parse_aspect
from clipcrop.serve.app import create_app


def test_info_reports_the_enforced_limits(tiny_cc):
    limits = Limits(max_file_bytes=123_456, max_query_chars=40, max_pixels=9_000_000)
    with TestClient(create_app(tiny_cc, limits, api_key="k")) as c:
        r = c.get("/v1/info")  # open, like /ready: the page needs it before it has a key
        assert r.status_code == 200
        info = r.json()
        assert info["max_top_k"] == 12 == c.get("/ready").json()["max_top_k"]  # the tiny decoder's M
        assert (info["max_upload_bytes"], info["max_query_chars"], info["max_pixels"]) == (
            123_456,
            40,
            9_000_000,
        )
        assert info["mode"] == "trained" and info["default_top_k"] == 5
        assert {"image/jpeg", "image/png", "image/webp"} <= set(info["media_types"])
        assert "JPEG" in info["formats"] and info["output_formats"] == ["jpeg", "png", "webp"]
        assert {"2:3", "3:4", "4:3", "1:1", "16:9"} <= set(info["aspect_presets"])
        assert all(parse_aspect(p) for p in info["aspect_presets"])
        assert c.post("/v1/crop").status_code == 401  # the rest of /v1 still needs the key
        spec = c.get("/openapi.json").json()
        schema = spec["paths"]["/v1/info"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        name = schema["$ref"].rsplit("/", 1)[1]
        assert {"max_top_k", "max_upload_bytes", "max_query_chars", "mode", "model", "aspect_presets"} <= set(
            spec["components"]["schemas"][name]["properties"]
        )


def test_info_caps_top_k_with_the_limits_and_waits_for_the_model(tiny_cc):
    with TestClient(create_app(tiny_cc, Limits(max_top_k=3))) as c:
        assert c.get("/v1/info").json()["max_top_k"] == 3
        assert c.get("/v1/info").json()["default_top_k"] == 3
    release = threading.Event()

    def slow_loader():
        release.wait(30)
        return tiny_cc

    with TestClient(create_app(slow_loader, Limits())) as c:
        r = c.get("/v1/info")
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        release.set()
