"""The web page in a real Chromium (Debian's, driven by Playwright) against the service on loopback."""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import sample_photo
from PIL import Image

from clipcrop.limits import Limits

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
KEY = "page-test-key"


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(
                "chromium is not installed, and CI must run the browser tests (apt-get install chromium)"
            )
        pytest.skip("chromium is not installed (apt-get install chromium); browser tests skipped outside CI")
    return path


class ThreadServer:
    """uvicorn serving an app from a thread, on a free loopback port."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def servers(tiny_cc):
    from clipcrop.serve.app import create_app

    with (
        ThreadServer(create_app(tiny_cc, Limits())) as open_srv,
        ThreadServer(create_app(tiny_cc, Limits(), api_key=KEY)) as key_srv,
    ):
        yield open_srv, key_srv


def _new_page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(
        "console",
        lambda m: (
            problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" and "401" not in m.text and "415" not in m.text
            else None
        ),
    )
    return context, page, problems


def test_crop_with_the_keyboard_then_an_error(browser, servers, tmp_path):
    base = servers[0].base
    context, page, problems = _new_page(browser)
    page.goto(base + "/")
    assert page.title().startswith("ClipCrop")
    page.set_input_files("#image", str(sample_photo("astronaut.png")))
    page.fill("#query", "a woman in a space suit")
    page.fill("#top-k", "3")
    page.check("#aspect-presets input[value='4:5']")
    page.focus("#crop-button")
    page.keyboard.press("Enter")

    page.wait_for_selector("#thumbs li >> nth=2", timeout=60_000)
    assert page.locator("#boxes .box").count() == 3
    assert page.locator("#boxes .rank").all_inner_texts() == ["1", "2", "3"]
    metas = page.locator("#thumbs .score").all_inner_texts()
    assert len(metas) == 3 and all("score 0." in m or "score 1." in m for m in metas), metas
    assert "3 crops" in page.locator("#status").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "web_page.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert Image.open(io.BytesIO(data)).size[0] == 1280

    # every thumbnail is a real picture, and the download is the crop at full resolution
    widths = page.eval_on_selector_all("#thumbs img", "els => els.map(e => e.naturalWidth)")
    assert len(widths) == 3 and min(widths) > 0
    with page.expect_download() as info:
        page.get_by_text("Download crop 1").click()
    download = info.value
    assert download.suggested_filename == "astronaut_crop1.jpg"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    w, h = (int(v) for v in metas[0].rsplit("·", 1)[1].strip().split("×"))
    with Image.open(saved) as crop:
        assert crop.size == (w, h)
    assert abs(w / h - 4 / 5) < 0.02

    # a file that is not an image: a readable message in an alert, Enter in the query field submits
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("these are notes, not a photo\n" * 20)
    page.set_input_files("#image", str(not_image))
    page.focus("#query")
    page.keyboard.press("Enter")
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible", timeout=30_000)
    text = alert.inner_text()
    assert "415" in text and "notes.jpg" in text and "not a recognised image" in text, text
    assert not problems, problems
    context.close()


def test_page_asks_for_the_api_key(browser, servers):
    base = servers[1].base
    context, page, problems = _new_page(browser)
    page.goto(base + "/")
    assert page.locator("#api-key").is_hidden()
    page.set_input_files("#image", str(sample_photo("chelsea.png")))
    page.fill("#query", "a cat")
    page.press("#query", "Enter")
    page.get_by_role("alert").wait_for(state="visible", timeout=30_000)
    assert "API key" in page.get_by_role("alert").inner_text()
    key_field = page.locator("#api-key")
    assert key_field.is_visible() and key_field.get_attribute("type") == "password"
    assert page.evaluate("document.activeElement.id") == "api-key"
    key_field.fill(KEY)
    key_field.press("Enter")
    page.wait_for_selector("#thumbs li", timeout=60_000)
    assert page.locator("#error").inner_text() == ""
    assert page.evaluate("sessionStorage.getItem('clipcrop-api-key')") == KEY
    # a reload keeps the key for this tab
    page.reload()
    assert page.locator("#api-key").input_value() == KEY
    assert not problems, problems
    context.close()


def test_api_docs_render_from_the_service_alone(browser, servers):
    """/docs (Swagger UI) and /redoc render with every request going to the service itself: they
    work on a machine without internet access (FastAPI's defaults fetch their code from CDNs)."""
    base = servers[1].base  # the service with an API key: the docs and their assets stay open
    context, page, problems = _new_page(browser)
    answered: list[str] = []  # every response the page got, from wherever
    refused: dict[str, str] = {}  # requests the browser did not send, and why
    page.on("response", lambda response: answered.append(response.url))
    page.on("requestfailed", lambda request: refused.update({request.url: request.failure or ""}))
    page.goto(base + "/docs")
    title = page.locator(".swagger-ui .info .title")
    title.wait_for(timeout=30_000)
    assert title.inner_text().startswith("ClipCrop")
    page.locator(".opblock-summary-path", has_text="/v1/crop").first.wait_for(timeout=30_000)
    page.goto(base + "/redoc")
    page.locator("h1", has_text="ClipCrop").first.wait_for(timeout=30_000)
    assert page.get_by_text("/v1/crop").count() > 0
    here = (base + "/", "blob:" + base + "/", "data:")
    assert len(answered) >= 8 and all(url.startswith(here) for url in answered), answered
    # ReDoc's bundle asks for its logo on cdn.redoc.ly: the page's CSP refuses it (ReDoc hides it)
    assert all(why == "csp" for url, why in refused.items() if not url.startswith(here)), refused
    assert all("cdn.redoc.ly" in p for p in problems), problems
    context.close()


def _overlap(a: dict, b: dict) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and (b["y"] < a["y"] + a["height"])
    )


def test_form_takes_the_servers_limits_and_keeps_the_queries_exclusive(browser, tiny_cc):
    from clipcrop.serve.app import create_app

    limits = Limits(max_file_bytes=200_000, max_query_chars=40)
    with ThreadServer(create_app(tiny_cc, limits)) as srv:
        context, page, problems = _new_page(browser)
        crops_sent: list[str] = []
        page.on("request", lambda r: crops_sent.append(r.url) if "/v1/crop" in r.url else None)
        page.goto(srv.base + "/")
        page.wait_for_selector("body[data-info=loaded]", timeout=30_000)
        assert page.get_attribute("#top-k", "max") == "12"  # the tiny model's M, not a page constant
        assert page.inner_text("#top-k-hint") == "1 to 12"
        assert page.get_attribute("#query", "maxlength") == "40"
        values = page.eval_on_selector_all("#aspect-presets input[name=aspect]", "os => os.map(o => o.value)")
        assert values == ["1:1", "4:5", "2:3", "3:4", "4:3", "3:2", "16:9", "9:16"]
        assert page.is_enabled("#faces")  # OpenCV is installed here: /v1/info says faces work

        # a text query locks the image picker; a query image clears and locks the text field
        page.fill("#query", "a cat")
        assert page.is_disabled("#image-query") and page.is_enabled("#query")
        page.fill("#query", "")
        assert page.is_enabled("#image-query")
        page.fill("#query", "a cat")
        page.fill("#query", " ")
        page.set_input_files("#image-query", str(sample_photo("grace_hopper.jpg")))
        assert page.is_disabled("#query") and page.input_value("#query") == ""
        assert page.is_visible("#image-query-note")
        page.click("#clear-image-query")
        assert page.is_enabled("#query") and page.is_enabled("#image-query")
        assert page.evaluate("document.getElementById('image-query').files.length") == 0

        # the server's limits are checked before anything is uploaded
        page.set_input_files("#image", str(sample_photo("grace_hopper.jpg")))
        page.fill("#top-k", "13")
        page.click("#crop-button")
        assert "from 1 to 12" in page.inner_text("#error")
        page.fill("#top-k", "2")
        page.set_input_files("#image", str(sample_photo("astronaut.png")))  # 0.79 MB > 0.19 MB
        page.click("#crop-button")
        assert "above this service's limit of 0.2 MB" in page.inner_text("#error")
        page.fill("#aspect-custom", "1:1, 0:1")
        page.set_input_files("#image", str(sample_photo("grace_hopper.jpg")))
        page.click("#crop-button")
        assert "W:H with two positive numbers" in page.inner_text("#error")
        page.fill("#aspect-custom", "")
        page.fill("#size", "1080 by 1350")
        page.click("#crop-button")
        assert "W×H in pixels, each side 1 to 16384" in page.inner_text("#error")
        assert crops_sent == []
        assert not problems, problems
        context.close()


def test_result_says_which_query_made_it_and_custom_ratios_apply(browser, servers):
    context, page, problems = _new_page(browser)
    page.goto(servers[0].base + "/")
    page.wait_for_selector("body[data-info=loaded]", timeout=30_000)
    page.set_input_files("#image", str(sample_photo("astronaut.png")))
    page.fill("#query", "a rocket")
    page.fill("#top-k", "2")
    page.fill("#aspect-custom", "5:4")
    page.click("#crop-button")
    page.wait_for_selector("#thumbs li >> nth=1", timeout=60_000)
    said = page.inner_text("#result-query-text")
    assert said.startswith("Crops for “a rocket”") and "aspect 5:4" in said, said
    for meta in page.locator("#thumbs .score").all_inner_texts():
        w, h = (int(v) for v in meta.rsplit("·", 1)[1].strip().split("×"))
        assert abs(w / h - 5 / 4) < 0.02, meta

    page.set_input_files("#image-query", str(sample_photo("coffee.png")))
    page.fill("#aspect-custom", "")
    page.click("#crop-button")
    page.locator("#result-query-text", has_text="query image").wait_for(timeout=60_000)
    assert page.inner_text("#result-query-text").startswith("Crops for the query image coffee.png")
    assert page.is_visible("#result-query-image")
    assert not problems, problems
    context.close()


def test_rank_labels_of_boxes_sharing_corners_never_cover_each_other(browser, servers):
    """Six crops share the top-left corner, two more the bottom-right one (as the service answers
    for nested crops): every number stays readable, inside the image."""
    import json

    boxes = [[0, 0, 512 - 40 * i, 512 - 40 * i] for i in range(6)] + [
        [200, 200, 512, 512],
        [300, 260, 512, 512],
    ]
    answer = {
        "image": "astronaut.png",
        "width": 512,
        "height": 512,
        "query": "nested",
        "image_query": None,
        "mode": "trained",
        "crops": [{"box": b, "score": 0.9 - 0.05 * i} for i, b in enumerate(boxes)],
        "error": None,
        "timings": {},
    }
    context, page, problems = _new_page(browser)
    page.route(
        "**/v1/crop",
        lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(answer)),
    )
    page.goto(servers[0].base + "/")
    page.set_input_files("#image", str(sample_photo("astronaut.png")))
    page.click("#crop-button")
    page.wait_for_selector("#thumbs li >> nth=7", timeout=60_000)
    assert page.locator("#boxes .rank").all_inner_texts() == [str(i) for i in range(1, 9)]
    page.evaluate("window.scrollTo(0, 0)")  # the image in the viewport: hit-testing needs it there
    stage = page.locator("#boxes").bounding_box()
    labels = [page.locator(f"#rank-{i}").bounding_box() for i in range(1, 9)]
    for i, a in enumerate(labels):
        assert stage["x"] - 0.5 <= a["x"] and a["x"] + a["width"] <= stage["x"] + stage["width"] + 0.5
        assert stage["y"] - 0.5 <= a["y"] and a["y"] + a["height"] <= stage["y"] + stage["height"] + 0.5
        for j, b in enumerate(labels[:i]):
            assert not _overlap(a, b), (i + 1, j + 1, a, b)
    # the topmost element at each label's centre is that label: nothing covers it (hit-testing on:
    # the overlay ignores the pointer so that the image stays usable)
    page.evaluate(
        "document.querySelectorAll('#boxes, #boxes *').forEach(e => e.style.pointerEvents = 'auto')"
    )
    for i, a in enumerate(labels, start=1):
        cx, cy = a["x"] + a["width"] / 2, a["y"] + a["height"] / 2
        assert page.evaluate(f"document.elementFromPoint({cx}, {cy}).id") == f"rank-{i}"
    assert not problems, problems
    context.close()


def _labels_apart_and_on_top(page, ids: list[str]) -> None:
    """Every label is inside the image, none overlaps another, and each is the topmost element
    at its centre (hit-testing switched on for the overlay, which ignores the pointer)."""
    page.evaluate("window.scrollTo(0, 0)")  # the image in the viewport: hit-testing needs it there
    stage = page.locator("#boxes").bounding_box()
    rects = [page.locator(f"#{i}").bounding_box() for i in ids]
    for n, a in enumerate(rects):
        x_in = stage["x"] - 0.5 <= a["x"] and a["x"] + a["width"] <= stage["x"] + stage["width"] + 0.5
        y_in = stage["y"] - 0.5 <= a["y"] and a["y"] + a["height"] <= stage["y"] + stage["height"] + 0.5
        assert x_in and y_in, (ids[n], a, stage)
        for m, b in enumerate(rects[:n]):
            assert not _overlap(a, b), (ids[n], ids[m], a, b)
    page.evaluate(
        "document.querySelectorAll('#boxes, #boxes *').forEach(e => e.style.pointerEvents = 'auto')"
    )
    for i, a in zip(ids, rects, strict=True):
        cx, cy = a["x"] + a["width"] / 2, a["y"] + a["height"] / 2
        assert page.evaluate(f"document.elementFromPoint({cx}, {cy}).id") == i
    page.evaluate("document.querySelectorAll('#boxes, #boxes *').forEach(e => e.style.pointerEvents = '')")


def test_two_ratios_faces_and_a_size(browser, servers, tmp_path):
    """Two presets and faces: the crops come grouped by ratio, each exactly its ratio, with the
    face drawn as a dashed prior and no label over another; a size with two ratios is the
    library's 400, shown as it words it; with one ratio the downloads have exactly that size."""
    context, page, problems = _new_page(browser)
    page.goto(servers[0].base + "/")
    page.wait_for_selector("body[data-info=loaded]", timeout=30_000)
    page.set_input_files("#image", str(sample_photo("grace_hopper.jpg")))  # 512 x 600
    page.fill("#top-k", "2")
    page.check("#aspect-presets input[value='1:1']")
    page.check("#aspect-presets input[value='16:9']")
    page.check("#faces")
    with page.expect_response("**/v1/crop") as answer:
        page.click("#crop-button")
    body = answer.value.json()
    page.wait_for_selector("#thumbs li >> nth=3", timeout=60_000)
    assert [c["aspect"] for c in body["crops"]] == ["1:1", "1:1", "16:9", "16:9"]
    faces = [p for p in body["priors"] if p["kind"] == "face"]
    assert len(faces) == 1 and len(body["priors"]) == 1

    # the groups, in the order asked, each with its crops at exactly its ratio
    groups = page.locator("#thumbs section.group")
    assert groups.evaluate_all("gs => gs.map(g => g.dataset.aspect)") == ["1:1", "16:9"]
    for n, (w, h) in enumerate([(1, 1), (16, 9)]):
        group = groups.nth(n)
        assert group.locator("h3").inner_text() == f"Aspect {w}:{h} · 2 crops"
        for meta in group.locator(".score").all_inner_texts():
            cw, ch = (int(v) for v in meta.rsplit("·", 1)[1].strip().split("×"))
            assert abs(cw - ch * w / h) <= max(1, w / h), meta
    assert page.locator("#boxes .rank").all_inner_texts() == ["1:1 #1", "1:1 #2", "16:9 #1", "16:9 #2"]
    said = page.inner_text("#result-query-text")
    assert "aspects 1:1, 16:9" in said and "1 face kept whole" in said, said

    # the face, drawn where the answer says, dashed, in its own colour, labelled
    prior = page.locator("#prior-1")
    assert prior.get_attribute("class") == "prior prior-face"
    style = prior.evaluate("e => [getComputedStyle(e).borderTopStyle, getComputedStyle(e).borderTopColor]")
    crop_colour = page.locator("#box-1").evaluate("e => getComputedStyle(e).borderTopColor")
    assert style[0] == "dashed" and style[1] != crop_colour
    assert page.inner_text("#prior-label-1") == "face"
    assert page.is_visible("#legend")
    stage = page.locator("#boxes").bounding_box()
    drawn = prior.bounding_box()
    scale = stage["width"] / body["width"]
    x0, y0, x1, y1 = faces[0]["box"]
    assert abs(drawn["x"] - (stage["x"] + x0 * scale)) <= 2 and abs(drawn["width"] - (x1 - x0) * scale) <= 2
    assert abs(drawn["y"] - (stage["y"] + y0 * scale)) <= 2 and abs(drawn["height"] - (y1 - y0) * scale) <= 2
    _labels_apart_and_on_top(page, [f"rank-{i}" for i in range(1, 5)] + ["prior-label-1"])

    # one size goes with one ratio: the library's refusal, shown; nothing drawn over the result
    page.fill("#size", "300x300")
    page.click("#crop-button")
    page.get_by_role("alert").wait_for(state="visible", timeout=30_000)
    text = page.get_by_role("alert").inner_text()
    assert "400" in text and "cannot go with several aspect ratios" in text, text

    # one ratio and the size: every download is exactly 300 x 300
    page.uncheck("#aspect-presets input[value='16:9']")
    with page.expect_response("**/v1/crop") as answer:
        page.click("#crop-button")
    body = answer.value.json()
    assert answer.value.status == 200 and [c["output_size"] for c in body["crops"]] == [[300, 300]] * 2
    page.locator("#thumbs .score", has_text="→ 300×300").nth(1).wait_for(timeout=60_000)
    assert page.locator("#thumbs section.group").count() == 1
    assert page.locator("#boxes .rank").all_inner_texts() == ["1", "2"]
    with page.expect_download() as info:
        page.get_by_text("Download crop 1").click()
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    with Image.open(saved) as crop:
        assert crop.size == (300, 300)
    assert page.inner_text("#error") == ""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_page_groups.png"), full_page=True)
    refused = "the server responded with a status of 400"  # the browser logs the refused request
    assert [p for p in problems if refused not in p] == [] and len(problems) == 1, problems
    context.close()


def test_prior_labels_never_cover_rank_labels(browser, servers):
    """Crops and priors of every kind sharing the top-left corner (keep, avoid, face): every
    label stays readable, each prior kind has its own dashed style, weights are shown."""
    import json

    boxes = [[0, 0, 512 - 60 * i, 512 - 60 * i] for i in range(3)]
    answer = {
        "image": "astronaut.png",
        "width": 512,
        "height": 512,
        "query": None,
        "mode": "trained",
        "crops": [
            {"box": b, "score": 0.9 - 0.1 * i, "aspect": a, "focus": [100.0, 100.0]}
            for i, (b, a) in enumerate(zip(boxes + boxes, ["1:1"] * 3 + ["4:5"] * 3, strict=True))
        ],
        "subject": None,
        "priors": [
            {"box": [0.0, 0.0, 200.0, 200.0], "kind": "keep", "weight": 2.0},
            {"box": [0.0, 0.0, 150.0, 150.0], "kind": "avoid", "weight": 1.0},
            {"box": [0.0, 0.0, 100.0, 100.0], "kind": "face", "weight": 1.0},
        ],
        "error": None,
        "timings": {},
    }
    context, page, problems = _new_page(browser)
    page.route(
        "**/v1/crop",
        lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(answer)),
    )
    page.goto(servers[0].base + "/")
    page.set_input_files("#image", str(sample_photo("astronaut.png")))
    page.click("#crop-button")
    page.wait_for_selector("#thumbs li >> nth=5", timeout=60_000)
    assert page.locator("#boxes .prior-label").all_inner_texts() == ["keep ×2", "avoid", "face"]
    colours = {
        page.locator(f"#prior-{i}").evaluate("e => getComputedStyle(e).borderTopColor") for i in (1, 2, 3)
    }
    assert len(colours) == 3
    styles = page.eval_on_selector_all(
        "#boxes .prior", "es => es.map(e => getComputedStyle(e).borderTopStyle)"
    )
    assert styles == ["dashed"] * 3
    ids = [f"rank-{i}" for i in range(1, 7)] + [f"prior-label-{i}" for i in (1, 2, 3)]
    _labels_apart_and_on_top(page, ids)
    assert not problems, problems
    context.close()
