"""``POST /v1/detect`` through FastAPI's TestClient: the library's ``detect`` for the same upload,
its errors (400/413/415/422 JSON bodies) and its OpenAPI entry."""

from __future__ import annotations

import io

import pytest
from conftest import sample_photo
from fastapi.testclient import TestClient
from PIL import Image
from test_service import ERROR_STATUSES, assert_error, post

from clipcrop.io.images import decode_bytes
from clipcrop.limits import Limits
from clipcrop.serve.app import create_app


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


def detect(client, image, **kwargs):
    return post(client, "/v1/detect", image=image, **kwargs)


def test_text_query_answers_the_librarys_detections(client, tiny_cc, photo):
    r = detect(client, ("astronaut.png", photo, "image/png"), query=" a  human face ", top_k=4)
    assert r.status_code == 200, r.text
    body = r.json()
    timings = body.pop("timings")
    assert {"decode", "preprocess", "backbone", "text_encoder", "total"} <= set(timings)
    loaded = decode_bytes(photo, Limits(), name="astronaut.png")
    assert body == tiny_cc.detect(loaded, query="a human face", top_k=4).to_dict()
    assert body["query"] == "a human face" and body["truncated"] is False and body["error"] is None
    scores = [d["score"] for d in body["detections"]]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)


def test_image_query_answers_the_librarys_detections(client, tiny_cc, photo, small_jpeg):
    r = detect(client, ("a.png", photo), files={"image_query": ("cat.jpg", small_jpeg)}, top_k=2)
    assert r.status_code == 200, r.text
    body = r.json()
    del body["timings"]
    limits = Limits()
    expected = tiny_cc.detect(
        decode_bytes(photo, limits, name="a.png"),
        image_query=decode_bytes(small_jpeg, limits, name="cat.jpg"),
        top_k=2,
    ).to_dict()
    assert body == expected
    assert body["query"] is None and body["image_query"] == "cat.jpg" and isinstance(body["query_token"], int)


def test_default_top_k_and_more_detections_than_crops(client, tiny_cc, small_jpeg):
    """top_k defaults to 5 and may exceed the model's number of crops (12 on the tiny checkpoint)."""
    assert len(detect(client, ("cat.jpg", small_jpeg), query="a cat").json()["detections"]) == 5
    assert tiny_cc.max_top_k == 12
    r = detect(client, ("cat.jpg", small_jpeg), query="a cat", top_k=20)
    assert r.status_code == 200, r.text
    assert len(r.json()["detections"]) == 20
    tokens = tiny_cc.backbone.encode(
        tiny_cc.backbone.preprocess([Image.open(io.BytesIO(small_jpeg))]), [(451, 300)]
    ).boxes.shape[1]
    r = detect(client, ("cat.jpg", small_jpeg), query="a cat", top_k=1000)
    assert r.status_code == 200 and len(r.json()["detections"]) == tokens  # every token, no more


@pytest.mark.parametrize(
    "fields,files,code",
    [
        ({}, {}, "invalid_query"),  # neither query
        ({"query": "a cat"}, {"image_query": ("q.jpg", "SMALL")}, "invalid_query"),  # both
        ({"query": "   "}, {}, "invalid_query"),
        ({"query": "a cat", "top_k": 0}, {}, "invalid_parameter"),
        ({"query": "a cat", "top_k": 1001}, {}, "invalid_parameter"),
        ({"query": "a cat", "top_k": "many"}, {}, "invalid_parameter"),
    ],
)
def test_bad_requests_are_400(client, small_jpeg, fields, files, code):
    files = {k: (name, small_jpeg) for k, (name, _) in files.items()}
    body = assert_error(detect(client, ("cat.jpg", small_jpeg), files=files, **fields), 400, code)
    if not fields:
        assert "query" in body["error"]["message"] and "image_query" in body["error"]["message"]


def test_missing_image_unreadable_too_large_too_many_pixels(tiny_cc, client, photo, small_jpeg):
    assert_error(post(client, "/v1/detect", query="a cat"), 400, "invalid_parameter")
    assert_error(
        detect(client, ("a.jpg", b"not an image", "image/jpeg"), query="a cat"), 415, "unreadable_image"
    )
    with TestClient(create_app(tiny_cc, Limits(max_file_bytes=20_000))) as c:
        assert_error(detect(c, ("a.png", photo), query="a cat"), 413, "file_too_large")
    with TestClient(create_app(tiny_cc, Limits(max_pixels=10_000))) as c:
        assert_error(detect(c, ("a.png", photo), query="a cat"), 422, "image_too_large")


def test_openapi_documents_detect(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/detect"]["post"]
    fields = op["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    props = spec["components"]["schemas"][fields]["properties"]
    assert set(props) == {"image", "query", "image_query", "top_k"}
    assert props["top_k"]["maximum"] == 1000 and props["top_k"]["default"] == 5
    answer = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    schema = spec["components"]["schemas"][answer]
    assert {"image", "width", "height", "query", "detections", "error", "timings"} <= set(
        schema["properties"]
    )
    item = spec["components"]["schemas"]["DetectionItem"]["properties"]
    assert set(item) == {"box", "score", "logit", "token"}
    for status in ERROR_STATUSES:
        ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorBody"), status
