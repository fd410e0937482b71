"""``clipcrop detect`` in a subprocess like a user runs it, against the library's ``detect``."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import sample_photo
from test_cli import run_cli

PHOTOS = [sample_photo("astronaut.png"), sample_photo("coffee.png"), sample_photo("grace_hopper.jpg")]


def assert_same_detections(got: dict, expected: dict) -> None:
    """``detect`` objects equal but for float noise (another process may sum in another order)."""
    rest = {k: v for k, v in got.items() if k != "detections"}
    assert rest == {k: v for k, v in expected.items() if k != "detections"}
    assert [d["token"] for d in got["detections"]] == [d["token"] for d in expected["detections"]]
    for a, b in zip(got["detections"], expected["detections"], strict=True):
        assert a["box"] == pytest.approx(b["box"], abs=1e-2)
        assert (a["score"], a["logit"]) == pytest.approx((b["score"], b["logit"]), rel=1e-5, abs=1e-5)


def assert_same_crops(got: list[dict], expected: list[dict]) -> None:
    """Crop lists equal: the same pixel boxes, scores equal but for float noise."""
    assert [c["box"] for c in got] == [c["box"] for c in expected]
    assert [c["score"] for c in got] == pytest.approx([c["score"] for c in expected], abs=1e-5)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("detect-photos")
    out = []
    for src in PHOTOS:
        shutil.copy(src, d / src.name)
        out.append(d / src.name)
    return out


def test_json_equals_the_library_and_is_ranked(tiny_backbone_dir, tiny_free_cc, photos):
    r = run_cli(
        "detect", *map(str, photos), "--query", "  a cup  of coffee ", "-k", "4", "--json",
        "--model", str(tiny_backbone_dir),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["image"] for d in lines] == [str(p) for p in photos]
    for d, photo in zip(lines, photos, strict=True):
        expected = tiny_free_cc.detect(str(photo), query="a cup of coffee", top_k=4).to_dict()
        assert_same_detections(d, expected)
        assert d["query"] == "a cup of coffee" and d["error"] is None and d["truncated"] is False
        dets = d["detections"]
        assert len(dets) == 4 and len({x["token"] for x in dets}) == 4
        scores = [x["score"] for x in dets]
        assert scores == sorted(scores, reverse=True)
        for x in dets:
            assert x["score"] == pytest.approx(1 / (1 + math.exp(-x["logit"])), abs=1e-5)
            x0, y0, x1, y1 = x["box"]
            assert 0 <= x0 <= x1 <= d["width"] and 0 <= y0 <= y1 <= d["height"]
    assert r.stderr == ""


def test_image_query_top_k_and_trained_checkpoint(tiny_clipcrop_dir, tiny_free_cc, photos):
    """A trained checkpoint detects with its backbone: the same detections as that backbone alone."""
    r = run_cli(
        "detect", str(photos[0]), "--image-query", str(photos[1]), "--top-k", "2", "--json",
        "--model", str(tiny_clipcrop_dir),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    expected = tiny_free_cc.detect(str(photos[0]), image_query=str(photos[1]), top_k=2).to_dict()
    assert_same_detections(d, expected)
    assert d["query"] is None and d["image_query"] == str(photos[1]) and len(d["detections"]) == 2
    assert isinstance(d["query_token"], int)


def test_table_and_per_image_failures(tiny_backbone_dir, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    args = [
        "detect",
        str(photos[1]),
        str(broken),
        "-q",
        "a cup",
        "-k",
        "3",
        "--model",
        str(tiny_backbone_dir),
    ]
    r = run_cli(*args)
    assert r.returncode == 1
    rows = r.stdout.splitlines()
    assert rows[0].startswith(f"{photos[1]}  600x400  query 'a cup'")
    assert [row.split()[0] for row in rows[1:]] == ["1", "2", "3"] and all("token" in row for row in rows[1:])
    errors = r.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("clipcrop: error:") and "broken.jpg" in errors[0]

    r = run_cli(*args, "--json")
    assert r.returncode == 1
    good, bad = (json.loads(line) for line in r.stdout.splitlines())
    assert good["error"] is None and len(good["detections"]) == 3
    assert bad["image"] == str(broken) and bad["detections"] == [] and bad["width"] is None
    assert bad["error"] and "broken.jpg" in bad["error"]
    assert r.stderr.count("clipcrop: error:") == 1 and "Traceback" not in r.stderr


def test_argument_errors_are_one_line_without_torch(tiny_backbone_dir, photos):
    code = f"""
import contextlib, io, sys
from clipcrop.cli.main import main
photo, other, model = {str(photos[0])!r}, {str(photos[1])!r}, {str(tiny_backbone_dir)!r}
cases = {{
    "neither": ["detect", photo, "--model", model],
    "k0": ["detect", photo, "-q", "a cat", "-k", "0", "--model", model],
    "k1001": ["detect", photo, "-q", "a cat", "-k", "1001", "--model", model],
    "empty": ["detect", photo, "-q", "   ", "--model", model],
    "missing": ["detect", "/nonexistent/x.jpg", "-q", "a cat", "--model", model],
    "backbone": ["detect", photo, "-q", "a cat", "--model", model, "--backbone", model],
}}
for name, argv in cases.items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    lines = err.getvalue().splitlines()
    print(name, rc, len(lines), lines[0] if lines else "")
err = io.StringIO()
with contextlib.redirect_stderr(err):
    try:
        main(["detect", photo, "-q", "a", "--image-query", other])
    except SystemExit as exc:
        print("both", exc.code, err.getvalue().splitlines()[-1])
print("heavy", [m for m in ("torch", "transformers", "spacy") if m in sys.modules])
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = {line.split()[0]: line for line in r.stdout.splitlines()}
    for name, needle in [
        ("neither", "detect needs --query TEXT or --image-query PATH"),
        ("k0", "top_k must be between 1 and 1000, got 0"),
        ("k1001", "top_k must be between 1 and 1000, got 1001"),
        ("empty", "query is empty"),
        ("missing", "/nonexistent/x.jpg"),
        ("backbone", "--backbone is for trained ClipCrop checkpoints"),
    ]:
        assert got[name].startswith(f"{name} 2 1 clipcrop: error: "), got[name]
        assert needle in got[name], got[name]
    assert got["both"].startswith("both 2 clipcrop: error: argument --image-query: not allowed with")
    assert got["heavy"] == "heavy []"
