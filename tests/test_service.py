"""The HTTP service through FastAPI's TestClient with the tiny predictors: every endpoint, every
error code, the queue, readiness, the OpenAPI document, hostile uploads and schemathesis."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import pytest
from conftest import sample_photo
from fastapi.testclient import TestClient
from PIL import Image

from clipcrop.errors import ModelLoadError
from clipcrop.limits import Limits
from clipcrop.serve.app import create_app

ERROR_STATUSES = ("400", "401", "413", "415", "422", "429", "500", "503")


@pytest.fixture(scope="module")
def photo() -> bytes:
    return sample_photo("astronaut.png").read_bytes()  # 512 x 512


@pytest.fixture(scope="module")
def small_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.open(sample_photo("chelsea.png")).convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()  # 451 x 300


@pytest.fixture(scope="module")
def client(tiny_cc):
    with TestClient(create_app(tiny_cc, Limits())) as c:
        yield c


def post(client, path="/v1/crop", image=None, files=None, **fields):
    files = dict(files or {})
    if image is not None:
        files["image"] = image
    return client.post(path, files=files or None, data={k: str(v) for k, v in fields.items()})


def assert_error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"] and "Traceback" not in r.text
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


class Blocking:
    """Wraps a predictor: ``encode`` (the service's first model step) waits for ``release``
    (fills the queue deterministically)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, *args, **kwargs):
        assert self.release.wait(30)
        return self.inner.encode(*args, **kwargs)


def wait_until(predicate, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# ------------------------------------------------------------------------------------- success
def test_crop_json(client, photo):
    r = post(client, image=("astronaut.png", photo, "image/png"), query="a woman", top_k=3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == "astronaut.png"
    assert (body["width"], body["height"]) == (512, 512)
    assert body["query"] == "a woman" and body["error"] is None
    assert body["mode"] == "trained"
    assert {"decode", "backbone", "total"} <= set(body["timings"])
    assert len(body["crops"]) == 3
    scores = [c["score"] for c in body["crops"]]
    assert scores == sorted(scores, reverse=True)
    for c in body["crops"]:
        x0, y0, x1, y1 = c["box"]
        assert all(isinstance(v, int) for v in c["box"])
        assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512
    assert r.headers["x-content-type-options"] == "nosniff"


def test_crop_unconditioned_with_aspect(client, small_jpeg):
    r = post(client, image=("cat.jpg", small_jpeg, "image/jpeg"), aspect="16:9", top_k=2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] is None and (body["width"], body["height"]) == (451, 300)
    for c in body["crops"]:
        x0, y0, x1, y1 = c["box"]
        assert abs((x1 - x0) - (y1 - y0) * 16 / 9) <= 16 / 9 + 1


def test_crop_image_query(client, photo, small_jpeg):
    r = post(client, image=("a.png", photo), files={"image_query": ("cat.jpg", small_jpeg)}, top_k=1)
    assert r.status_code == 200, r.text
    assert r.json()["image_query"] == "cat.jpg" and len(r.json()["crops"]) == 1


def test_browser_style_empty_file_part_means_no_image_query(client, small_jpeg):
    r = post(client, image=("cat.jpg", small_jpeg), files={"image_query": ("", b"")}, top_k=1)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("fmt,pil_format", [("jpeg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")])
def test_crop_image_formats(client, small_jpeg, fmt, pil_format):
    fields = dict(query="a cat", top_k=2, aspect="4:5")
    best = post(client, image=("cat.jpg", small_jpeg), **fields).json()["crops"][0]
    r = post(client, "/v1/crop/image", image=("cat.jpg", small_jpeg), format=fmt, **fields)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == f"image/{fmt}"
    assert r.headers["x-crop-box"] == ",".join(map(str, best["box"]))
    img = Image.open(io.BytesIO(r.content))
    assert img.format == pil_format
    x0, y0, x1, y1 = best["box"]
    assert img.size == (x1 - x0, y1 - y0)


def test_crop_image_is_cut_at_full_resolution(tiny_cc, photo):
    """The model sees a reduced decode (decode_max_side=100); the picture is cut from the original."""
    big = io.BytesIO()
    Image.open(io.BytesIO(photo)).convert("RGB").save(big, "JPEG", quality=90)
    with TestClient(create_app(tiny_cc, Limits(decode_max_side=100))) as c:
        best = post(c, image=("a.jpg", big.getvalue()), top_k=1).json()["crops"][0]
        r = post(c, "/v1/crop/image", image=("a.jpg", big.getvalue()), top_k=1, format="png")
    assert r.status_code == 200, r.text
    x0, y0, x1, y1 = best["box"]
    assert Image.open(io.BytesIO(r.content)).size == (x1 - x0, y1 - y0)


def test_training_free_mode(tiny_free_cc, small_jpeg):
    with TestClient(create_app(tiny_free_cc)) as c:
        r = post(c, image=("cat.jpg", small_jpeg), query="a cat", top_k=2)
        assert r.status_code == 200, r.text
        assert r.json()["mode"] == "training-free"
        assert c.get("/ready").json()["mode"] == "training-free"


def test_health_ready_page_static(client):
    assert client.get("/health").json()["status"] == "ok"
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["max_top_k"] == 12  # the tiny decoder's number of queries
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'id="crop-form"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


# ------------------------------------------------------------------------------------- 400
@pytest.mark.parametrize(
    "fields,code",
    [
        ({"top_k": "abc"}, "invalid_parameter"),
        ({"top_k": "0"}, "invalid_parameter"),
        ({"top_k": "-3"}, "invalid_parameter"),
        ({"top_k": "13"}, "invalid_parameter"),  # above the tiny decoder's 12 crops
        ({"top_k": "99999999999999999999"}, "invalid_parameter"),
        ({"aspect": "wide"}, "invalid_parameter"),
        ({"aspect": "0:1"}, "invalid_parameter"),
        ({"aspect": "1:2:3"}, "invalid_parameter"),
        ({"query": ""}, "invalid_query"),
        ({"query": "   \t "}, "invalid_query"),
        ({"query": "x" * 513}, "invalid_query"),
        ({"query": "cat\x00dog"}, "invalid_query"),
    ],
)
def test_bad_parameters(client, small_jpeg, fields, code):
    assert_error(post(client, image=("cat.jpg", small_jpeg), **fields), 400, code)


def test_missing_image(client, small_jpeg):
    body = assert_error(post(client, query="a cat"), 400, "invalid_parameter")
    assert "image" in body["error"]["message"]
    assert_error(client.post("/v1/crop", data={"image": "not a file"}), 400)
    assert_error(client.post("/v1/crop", files={"image": ("", b"")}), 400)
    assert_error(client.post("/v1/crop", json={"image": "x"}), 400)
    assert_error(client.post("/v1/crop/image"), 400)


def test_query_and_image_query_together(client, small_jpeg):
    r = post(client, image=("a.jpg", small_jpeg), files={"image_query": ("q.jpg", small_jpeg)}, query="cat")
    assert_error(r, 400, "invalid_query")


def test_bad_format_and_malformed_body(client, small_jpeg):
    assert_error(post(client, "/v1/crop/image", image=("a.jpg", small_jpeg), format="gif"), 400)
    r = client.post(
        "/v1/crop",
        content=b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\nabc',
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert r.status_code == 400 and "error" in r.json()


def test_not_found_and_method_not_allowed(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/v1/crop"), 405, "method_not_allowed")


# ------------------------------------------------------------------------------------- 413 415 422
def test_upload_too_large(tiny_cc, small_jpeg, photo):
    limits = Limits(max_file_bytes=20_000)
    with TestClient(create_app(tiny_cc, limits)) as c:
        # a body above the request limit: refused on its Content-Length, before it is read
        body = assert_error(post(c, image=("a.png", photo)), 413, "file_too_large")
        # the server's limit, in words for the client: no server flag (--max-upload-mb) in it
        assert body["error"]["message"].endswith("; the limit is 0.0 MB per image")
        # a file just above the per-image limit but within the request limit
        padded = small_jpeg[:10_000] + b"\0" * 15_000
        assert_error(post(c, image=("a.jpg", padded)), 413, "file_too_large")
        assert c.get("/ready").json()["running"] == 0


def _asgi_post(app, headers: list[tuple[bytes, bytes]], chunks, *, disconnect: bool = False):
    """Drive the raw ASGI app; returns (status or None, bytes consumed by the app)."""
    consumed = 0
    status = None
    feed = iter(chunks)

    async def receive():
        nonlocal consumed
        chunk = next(feed, None)
        if chunk is None:
            if disconnect:
                return {"type": "http.disconnect"}
            await asyncio.sleep(3600)
        consumed += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/crop",
        "raw_path": b"/v1/crop",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    return status, consumed


def test_upload_limit_is_enforced_while_streaming(tiny_cc):
    limits = Limits(max_file_bytes=10_000)
    app = create_app(tiny_cc, limits)
    ctype = (b"content-type", b"multipart/form-data; boundary=xyz")
    # no Content-Length (chunked): counted as it streams, refused after at most limit + one chunk
    endless = (b"x" * 4096 for _ in range(100_000))
    status, consumed = _asgi_post(app, [ctype], endless)
    assert status == 413 and consumed <= 2 * 10_000 + 64 * 1024 + 4096
    # a declared Content-Length above the limit: refused without reading a byte
    status, consumed = _asgi_post(app, [ctype, (b"content-length", b"999999999")], endless)
    assert (status, consumed) == (413, 0)
    # a client that disconnects mid-upload gets nothing, and holds nothing
    status, consumed = _asgi_post(app, [ctype], [b"x" * 1000] * 3, disconnect=True)
    assert status is None and consumed == 3000
    svc = app.state.clipcrop
    assert (svc.queue.running, svc.queue.waiting) == (0, 0)


@pytest.mark.parametrize(
    "name,data",
    [
        ("notes.jpg", b"this is a text file, not a JPEG\n" * 10),
        ("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'),
        ("doc.jpg", b"%PDF-1.4\n%%EOF\n"),
        ("empty.jpg", b""),
    ],
)
def test_not_an_image(client, name, data):
    r = post(client, image=(name, data, "image/jpeg"))
    assert r.status_code == 415, r.text
    assert r.json()["error"]["code"] in ("unreadable_image", "unsupported_format")


def test_not_an_image_as_query_image(client, small_jpeg):
    r = post(client, image=("a.jpg", small_jpeg), files={"image_query": ("q.jpg", b"nope", "image/jpeg")})
    assert_error(r, 415, "unreadable_image")


def test_too_many_pixels(tiny_cc, photo):
    with TestClient(create_app(tiny_cc, Limits(max_pixels=10_000))) as c:
        assert_error(post(c, image=("a.png", photo)), 422, "image_too_large")


# ------------------------------------------------------------------------------------- 401
def test_api_key(tiny_cc, small_jpeg):
    with TestClient(create_app(tiny_cc, api_key="s3cret-key")) as c:
        image = ("a.jpg", small_jpeg)
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"X-API-Key": "wrong"},
            {"Authorization": "s3cret-key"},
        ):
            r = c.post("/v1/crop", files={"image": image}, data={"top_k": "1"}, headers=headers)
            body = assert_error(r, 401, "unauthorized")
            assert "s3cret" not in r.text and r.headers["www-authenticate"].startswith("Bearer")
            assert body["error"]["message"]
        for headers in ({"Authorization": "Bearer s3cret-key"}, {"X-API-Key": "s3cret-key"}):
            r = c.post("/v1/crop", files={"image": image}, data={"top_k": "1"}, headers=headers)
            assert r.status_code == 200, r.text
        r = c.post("/v1/crop/image", files={"image": image}, headers={"authorization": "bearer s3cret-key"})
        assert r.status_code == 200
        # the key is checked before the body: a huge unauthenticated upload is 401, not 413
        r = c.post("/v1/crop", content=b"x" * (60 * 1024 * 1024 + 1))
        assert r.status_code == 401
        for path in ("/health", "/ready", "/", "/static/app.js", "/openapi.json", "/docs"):
            assert c.get(path).status_code == 200, path
        for path in ("/v1/crop/", "/v1/other", "/static/../v1/crop", "/health/x"):  # deny by default
            assert c.post(path, files={"image": image}).status_code in (401, 404), path
        assert c.post("/v1/crop/", files={"image": image}).status_code == 401


# ------------------------------------------------------------------------------------- 429 504 503
def test_queue_full_answers_429(tiny_cc, small_jpeg):
    blocking = Blocking(tiny_cc)
    app = create_app(blocking, Limits(max_concurrency=1, max_queue=1))
    queue = app.state.clipcrop.queue
    results: list[int] = []

    def send():
        r = post(c, image=("a.jpg", small_jpeg), top_k=1)
        results.append(r.status_code)

    with TestClient(app) as c:
        first = threading.Thread(target=send)
        first.start()
        wait_until(lambda: queue.running == 1)
        second = threading.Thread(target=send)
        second.start()
        wait_until(lambda: queue.waiting == 1)
        r = post(c, image=("a.jpg", small_jpeg), top_k=1)
        assert_error(r, 429, "queue_full")
        assert int(r.headers["retry-after"]) >= 1
        # shed before the body is read: even an oversized upload is a quick 429, never buffered
        r = c.post(
            "/v1/crop", content=b"x" * (30 * 1024 * 1024), headers={"content-type": "multipart/form-data"}
        )
        assert_error(r, 429, "queue_full")
        assert c.get("/health").status_code == 200  # the event loop is not blocked
        blocking.release.set()
        first.join(30)
        second.join(30)
        assert results == [200, 200]
        wait_until(lambda: (queue.running, queue.waiting) == (0, 0))
        assert post(c, image=("a.jpg", small_jpeg), top_k=1).status_code == 200


def test_request_timeout_answers_504_and_frees_the_slot(tiny_cc, small_jpeg):
    blocking = Blocking(tiny_cc)
    app = create_app(blocking, Limits(max_concurrency=1, max_queue=4, request_timeout_s=0.3))
    queue = app.state.clipcrop.queue
    with TestClient(app) as c:
        assert_error(post(c, image=("a.jpg", small_jpeg), top_k=1), 504, "timeout")
        assert queue.running == 1  # the worker thread still owns its slot ...
        blocking.release.set()
        wait_until(lambda: queue.running == 0)  # ... until it ends
        assert post(c, image=("a.jpg", small_jpeg), top_k=1).status_code == 200


def test_ready_is_503_until_the_model_is_loaded(tiny_cc, small_jpeg):
    gate = threading.Event()

    def loader():
        assert gate.wait(30)
        return tiny_cc

    with TestClient(create_app(loader, Limits())) as c:
        assert_error(c.get("/ready"), 503, "not_ready")
        r = post(c, image=("a.jpg", small_jpeg))
        assert_error(r, 503, "not_ready")
        assert "retry-after" in r.headers
        assert c.get("/health").status_code == 200
        assert c.get("/").status_code == 200
        gate.set()
        wait_until(lambda: c.get("/ready").status_code == 200)
        assert post(c, image=("a.jpg", small_jpeg), top_k=1).status_code == 200


def test_model_load_failure_is_reported_by_ready():
    def loader():
        raise ModelLoadError("/nowhere: no such folder")

    with TestClient(create_app(loader, Limits())) as c:
        wait_until(lambda: "no such folder" in c.get("/ready").text)
        assert_error(c.get("/ready"), 503, "not_ready")


def test_internal_error_is_a_generic_500(tiny_cc, small_jpeg, caplog):
    class Broken(Blocking):
        def encode(self, *args, **kwargs):
            raise RuntimeError("secret internal detail")

    with TestClient(create_app(Broken(tiny_cc)), raise_server_exceptions=False) as c:
        r = post(c, image=("a.jpg", small_jpeg))
        assert_error(r, 500, "internal_error")
        assert "secret internal detail" not in r.text
        assert c.app.state.clipcrop.queue.running == 0
    assert "secret internal detail" in caplog.text  # logged server-side


# ------------------------------------------------------------------------------------- OpenAPI
def test_openapi_documents_endpoints_and_errors(client):
    spec = client.get("/openapi.json").json()
    assert {"/", "/health", "/ready", "/v1/crop", "/v1/crop/image"} <= set(spec["paths"])
    error = spec["components"]["schemas"]["ErrorBody"]
    assert error["properties"]["error"]["$ref"].endswith("/ErrorDetail")
    assert set(spec["components"]["schemas"]["ErrorDetail"]["properties"]) == {"code", "message"}
    for path in ("/v1/crop", "/v1/crop/image"):
        op = spec["paths"][path]["post"]
        fields = op["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
        props = spec["components"]["schemas"][fields]["properties"]
        assert {"image", "query", "image_query", "top_k", "aspect"} <= set(props)
        for status in ERROR_STATUSES:
            ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorBody"), (path, status)
    image_op = spec["paths"]["/v1/crop/image"]["post"]
    assert {"image/jpeg", "image/png", "image/webp"} <= set(image_op["responses"]["200"]["content"])
    assert spec["paths"]["/ready"]["get"]["responses"]["503"]
    assert client.get("/docs").status_code == 200


# ------------------------------------------------------------------------------------- hostile
try:
    from hostile import HOSTILE_QUERIES, IMAGE_CASES, expected_status
except ImportError:  # pragma: no cover - the corpus lives next to these tests
    IMAGE_CASES, HOSTILE_QUERIES = [], []


@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda c: c.name)
def test_hostile_upload(client, case):
    r = post(client, image=(case.filename, case.data, "image/jpeg"), top_k=1)
    assert r.status_code == expected_status(case), r.text[:300]
    if case.expect is not None:
        assert r.json()["error"]["code"] == case.expect.code
    else:
        assert (r.json()["width"], r.json()["height"]) == case.size


@pytest.mark.parametrize(
    "hq", [q for q in HOSTILE_QUERIES if isinstance(q.query, str) and q.name != "lone_surrogate"], ids=str
)
def test_hostile_query(client, small_jpeg, hq):
    fields = {} if hq.query is None else {"query": hq.query}
    r = post(client, image=("a.jpg", small_jpeg), top_k=1, **fields)
    assert r.status_code == (hq.expect.http_status if hq.expect else 200), r.text[:300]


# ------------------------------------------------------------------------------------- fuzzing
def test_schemathesis_finds_no_server_error(tiny_cc):
    """Property-based requests from the OpenAPI document (valid and invalid): never a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    app = create_app(tiny_cc, Limits(max_queue=64))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen: dict[str, set[int]] = {}

    def fuzz(label: str, strategy) -> None:
        @given(case=strategy)
        @settings(max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call()
            seen.setdefault(label, set()).add(response.status_code)
            assert response.status_code < 500, (case.as_curl_command(), response.text[:300])
            if response.status_code >= 400:
                assert set(response.json()) == {"error"}

        check()

    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [schemathesis.GenerationMode.POSITIVE]
        if operation.method.upper() == "POST":  # GETs without parameters have no invalid form
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:
            fuzz(operation.label, operation.as_strategy(generation_mode=mode))
    assert {"POST /v1/crop", "POST /v1/crop/image", "GET /ready"} <= set(seen)


def test_the_walk_keeps_its_types():
    """A request's way through the service is typed: the predictor is a ClipCrop, the uploads and
    what the worker returns are named dataclasses (no tuple picked by position)."""
    import dataclasses

    from clipcrop.serve.jobs import CroppedUpload, CropPicture, DecodedUploads, Job, Upload
    from clipcrop.serve.state import ServiceState

    assert Job.__annotations__["predictor"] == "ClipCrop"
    assert Job.__annotations__["image"] == "Upload" and Job.__annotations__["image_query"] == "Upload | None"
    assert ServiceState.require_predictor.__annotations__["return"] == "ClipCrop"
    assert [f.name for f in dataclasses.fields(DecodedUploads)] == ["image", "query_image", "seconds"]
    assert [f.name for f in dataclasses.fields(CroppedUpload)] == ["loaded", "result"]
    assert [f.name for f in dataclasses.fields(CropPicture)] == ["data", "media_type", "result"]
    assert [f.name for f in dataclasses.fields(Upload)] == ["data", "name"]
