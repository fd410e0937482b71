"""``clipcrop crop`` end to end on real photos, in a subprocess like a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import sample_photo
from PIL import Image

PHOTOS = [sample_photo("astronaut.png"), sample_photo("coffee.png"), sample_photo("grace_hopper.jpg")]


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    # one torch thread: on a busy 2-core machine more threads thrash on tiny models
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "clipcrop.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    (d / "sub").mkdir()
    shutil.copy(PHOTOS[0], d / "astronaut.png")
    shutil.copy(PHOTOS[1], d / "sub" / "coffee.png")
    shutil.copy(PHOTOS[2], d / "hopper.jpg")
    (d / "notes.txt").write_text("not an image")
    return d


def test_json_out_and_overlay(tiny_clipcrop_dir, photo_dir, tmp_path):
    out = tmp_path / "out"
    r = run_cli(
        "crop",
        str(photo_dir / "astronaut.png"),
        str(photo_dir / "hopper.jpg"),
        "--query",
        "a woman",
        "--top-k",
        "3",
        "--json",
        "--out",
        str(out),
        "--overlay",
        "--model",
        str(tiny_clipcrop_dir),
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(d["image"]).name for d in lines] == ["astronaut.png", "hopper.jpg"]
    for d in lines:
        assert set(d) >= {"image", "width", "height", "query", "crops", "error"}
        assert d["query"] == "a woman" and d["error"] is None and len(d["crops"]) == 3
        w, h = Image.open(d["image"]).size
        assert (d["width"], d["height"]) == (w, h)
        stem = Path(d["image"]).stem
        for k, crop in enumerate(d["crops"], start=1):
            x0, y0, x1, y1 = crop["box"]
            assert Image.open(out / f"{stem}_crop{k}.jpg").size == (x1 - x0, y1 - y0)
        assert Image.open(out / f"{stem}_overlay.jpg").size == (w, h)
    assert "Traceback" not in r.stderr


def test_folder_recursion_and_failures(tiny_backbone_dir, photo_dir):
    r = run_cli(
        "crop",
        str(photo_dir),
        str(photo_dir / "notes.txt"),
        "--json",
        "--model",
        str(tiny_backbone_dir),
        "--aspect",
        "1:1",
        "--top-k",
        "2",
    )
    assert r.returncode == 1
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    names = [Path(d["image"]).name for d in lines]
    # folder: images only, sorted, recursive; then the explicit bad input, with an error line
    assert names == ["astronaut.png", "hopper.jpg", "coffee.png", "notes.txt"]
    ok = [d for d in lines if d["error"] is None]
    assert len(ok) == 3
    for d in ok:
        for c in d["crops"]:
            x0, y0, x1, y1 = c["box"]
            assert abs((x1 - x0) - (y1 - y0)) <= 1
    errors = [d for d in lines if d["error"]]
    assert len(errors) == 1 and "notes.txt" in errors[0]["error"]
    assert r.stderr.count("clipcrop: error:") == 1
    assert "Traceback" not in r.stderr


def test_glob_and_table_output(tiny_backbone_dir, photo_dir):
    r = run_cli("crop", str(photo_dir / "**" / "*.png"), "--model", str(tiny_backbone_dir), "--top-k", "2")
    assert r.returncode == 0, r.stderr
    assert "astronaut.png" in r.stdout and "coffee.png" in r.stdout and "hopper" not in r.stdout
    assert "score" in r.stdout and "training-free" in r.stdout


def test_usage_errors_exit_2_without_traceback():
    for args in (
        ["crop"],
        ["crop", "x.jpg", "--query", "a", "--image-query", "b.jpg"],
        ["crop", "x.jpg", "--top-k", "x"],
        ["crop", "x.jpg", "--top-k", "0"],
        ["crop", "x.jpg"],  # no such file: a usage error, found before the model loads
        ["nonsense"],
    ):
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--aspect", "0:1"], "aspect"),
        (["--top-k", "0"], "top_k"),
        (["--query", "   "], "empty"),
        (["--model", "/nonexistent/model"], "no such folder"),
    ],
)
def test_bad_parameters_one_error_line(photo_dir, args, needle):
    r = run_cli("crop", str(photo_dir / "astronaut.png"), *args)
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.startswith("clipcrop: error:")]) == 1


def test_help_does_not_import_torch():
    code = (
        "import sys; from clipcrop.cli.main import main\n"
        "try:\n    main(['crop', '--help'])\nexcept SystemExit: pass\n"
        "try:\n    main(['crop', 'x.jpg', '--top-k', 'zz'])\nexcept SystemExit: pass\n"
        "assert main(['crop', 'x.jpg', '--query', '  ']) == 2\n"
        "assert main(['crop', 'x.jpg', '--aspect', '0:1']) == 2\n"
        "assert main(['crop', 'x.jpg']) == 2\n"
        "bad = [m for m in ('torch', 'transformers', 'spacy') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_image_query_and_profile(tiny_clipcrop_dir, photo_dir):
    r = run_cli(
        "crop",
        str(photo_dir / "hopper.jpg"),
        "--image-query",
        str(photo_dir / "astronaut.png"),
        "--model",
        str(tiny_clipcrop_dir),
        "--json",
        "--profile",
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["query"] is None and d["image_query"].endswith("astronaut.png")
    for stage in ("decode", "preprocess", "backbone", "select", "decoder", "postprocess"):
        assert stage in r.stderr


def test_batch_size_gives_same_results(tiny_clipcrop_dir, photo_dir):
    a = run_cli("crop", str(photo_dir), "--json", "--model", str(tiny_clipcrop_dir), "--query", "a cup")
    b = run_cli(
        "crop",
        str(photo_dir),
        "--json",
        "--model",
        str(tiny_clipcrop_dir),
        "--query",
        "a cup",
        "--batch-size",
        "3",
    )
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ra = [json.loads(x) for x in a.stdout.splitlines()]
    rb = [json.loads(x) for x in b.stdout.splitlines()]
    assert [d["image"] for d in ra] == [d["image"] for d in rb]
    for x, y in zip(ra, rb, strict=True):
        assert [c["box"] for c in x["crops"]] == [c["box"] for c in y["crops"]]
        assert [c["score"] for c in x["crops"]] == pytest.approx([c["score"] for c in y["crops"]], abs=1e-4)
