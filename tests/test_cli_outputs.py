"""The pictures ``clipcrop crop --out`` writes: names that never collide, nothing replaced unasked,
``--overlay`` only with ``--out``, and the source's colour profile and EXIF carried."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path, PurePath

import numpy as np
import pytest
from conftest import sample_photo
from PIL import Image
from test_metadata import FORMATS, assert_carried, tagged_photo

from clipcrop.io.output_names import crop_path, output_stems, overlay_path


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "clipcrop.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def error_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------- names
def stems(images: list[str], anchors: list[str | None]) -> list[str]:
    return [PurePath(s).as_posix() for s in output_stems(images, anchors)]


def test_names_keep_the_path_below_the_folder_given():
    # clipcrop crop dup: both found in the folder "dup"
    assert stems(["dup/a/x.jpg", "dup/b/x.jpg"], ["dup", "dup"]) == ["a/x", "b/x"]
    # the same files named directly (or through a glob): below the deepest folder holding both
    assert stems(["dup/a/x.jpg", "dup/b/x.jpg"], [None, None]) == ["a/x", "b/x"]
    # the README's first command: one file, written straight into the output folder
    assert stems(["photo.jpg"], [None]) == ["photo"]
    assert stems(["/data/shoot/IMG_0001.JPG"], [None]) == ["IMG_0001"]
    # a folder and a file elsewhere: both below their common folder
    assert stems(["p/q/x.jpg", "r/y.png"], ["p", None]) == ["p/q/x", "r/y"]


def test_names_that_would_still_meet_keep_their_extension_then_a_number():
    assert stems(["d/x.jpg", "d/x.png", "d/y.jpg"], ["d"] * 3) == ["x.jpg", "x.png", "y"]
    assert stems(["d/x.png", "d/x.jpg", "d/x.png.jpg"], ["d"] * 3) == ["x.png", "x.jpg", "x.png~2"]
    assert stems(["d/IMG.jpg", "d/img.jpg"], ["d"] * 2) == ["IMG.jpg", "img.jpg~2"]  # case-insensitive disks
    names = stems([f"d/{c}/x.jpg" for c in "abc"] + ["d/x.jpg"], [None] * 4)
    assert len({n.casefold() for n in names}) == 4


def test_output_paths():
    assert crop_path("out", PurePath("a/x"), 3) == Path("out/a/x_crop3.jpg")
    assert overlay_path("out", PurePath("x.png")) == Path("out/x.png_overlay.jpg")


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


def test_same_names_in_two_folders_give_all_pictures(tiny_backbone_dir, tmp_path):
    """dup/a/x.jpg and dup/b/x.jpg (plus x.png beside the second): every picture, each from its own photo."""
    dup = tmp_path / "dup"
    for sub, photo, name in (
        ("a", "chelsea.png", "x.jpg"),
        ("b", "coffee.png", "x.jpg"),
        ("b", "astronaut.png", "x.png"),
    ):
        (dup / sub).mkdir(parents=True, exist_ok=True)
        img = Image.open(sample_photo(photo)).convert("RGB").resize((200, 150))
        img.save(dup / sub / name, quality=95)
    out = tmp_path / "out"
    r = run_cli(
        "crop",
        str(dup),
        "--out",
        str(out),
        "--overlay",
        "--top-k",
        "2",
        "--json",
        "--quiet",
        "--model",
        str(tiny_backbone_dir),
    )
    assert r.returncode == 0, r.stderr
    results = {
        Path(d["image"]).relative_to(dup).as_posix(): d for d in map(json.loads, r.stdout.splitlines())
    }
    stems_of = {"a/x.jpg": "a/x", "b/x.jpg": "b/x.jpg", "b/x.png": "b/x.png"}
    want = set()
    for rel, stem in stems_of.items():
        want |= {f"{stem}_crop{k}.jpg" for k in range(1, len(results[rel]["crops"]) + 1)} | {
            f"{stem}_overlay.jpg"
        }
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == want
    assert len(want) >= 6
    for rel, stem in stems_of.items():
        source = Image.open(dup / rel).convert("RGB")
        box = results[rel]["crops"][0]["box"]
        written = Image.open(out / f"{stem}_crop1.jpg").convert("RGB")
        others = [Image.open(dup / o).convert("RGB").crop(box) for o in stems_of if o != rel]
        assert mean_diff(written, source.crop(box)) < 8  # JPEG noise only
        assert all(mean_diff(written, o) > 20 for o in others)  # not another photo's crop


# ---------------------------------------------------------------------------------- nothing replaced
def check_no_torch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys; from clipcrop.cli.main import main\n"
        f"rc = main({args!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported for a usage error'\n"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_existing_picture_is_refused_before_the_model_loads(tiny_backbone_dir, tmp_path):
    shutil.copy(sample_photo("coffee.png"), tmp_path / "photo.png")
    out = tmp_path / "crops"
    out.mkdir()
    (out / "photo_crop2.jpg").write_bytes(b"precious")
    args = ["crop", "photo.png", "--out", "crops", "--top-k", "3", "--model", str(tiny_backbone_dir)]
    r = check_no_torch(args, tmp_path)
    assert r.returncode == 2, r.stderr
    (line,) = error_lines(r)
    assert line.startswith("clipcrop: error: crops/photo_crop2.jpg already exists") and "--overwrite" in line
    assert sorted(p.name for p in out.iterdir()) == ["photo_crop2.jpg"]  # nothing half-written
    assert (out / "photo_crop2.jpg").read_bytes() == b"precious"

    r = run_cli(*args, "--overwrite", "--quiet", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["crops"]) >= 2
    assert Image.open(out / "photo_crop2.jpg").format == "JPEG"  # replaced, as asked


@pytest.mark.parametrize("flag", ["--overlay", "--strip-metadata", "--strip-icc"])
def test_picture_flags_without_out_are_a_usage_error(tmp_path, flag):
    """--overlay alone used to write into the current folder without saying so: now it is refused."""
    shutil.copy(sample_photo("coffee.png"), tmp_path / "photo.png")
    r = check_no_torch(["crop", "photo.png", flag], tmp_path)
    assert r.returncode == 2, r.stderr
    assert error_lines(r) == [f"clipcrop: error: {flag} needs --out DIR, the folder pictures are written to"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


# ---------------------------------------------------------------------------------- metadata
def test_cli_out_keeps_profile_and_exif_and_strips_on_request(tiny_backbone_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for fmt in FORMATS:
        (src / f"photo_{fmt}.{fmt}").write_bytes(tagged_photo(fmt))
    out = tmp_path / "out"
    common = ["crop", str(src), "--top-k", "2", "--model", str(tiny_backbone_dir), "--json", "--quiet"]
    r = run_cli(*common, "--out", str(out), "--overlay")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 3
    for d in lines:
        stem = Path(d["image"]).stem
        assert (d["width"], d["height"]) == (160, 240)
        for k, crop in enumerate(d["crops"], start=1):
            picture = Image.open(out / f"{stem}_crop{k}.jpg")
            x0, y0, x1, y1 = crop["box"]
            assert picture.size == (x1 - x0, y1 - y0)  # upright pixels, orientation applied once
            assert_carried(picture)
        assert_carried(Image.open(out / f"{stem}_overlay.jpg"))

    r = run_cli(*common, "--out", str(out), "--overwrite", "--strip-metadata")
    assert r.returncode == 0, r.stderr
    for d in map(json.loads, r.stdout.splitlines()):
        assert_carried(Image.open(out / f"{Path(d['image']).stem}_crop1.jpg"), exif=False)

    r = run_cli(*common, "--out", str(out), "--overwrite", "--strip-icc")
    assert r.returncode == 0, r.stderr
    assert_carried(Image.open(out / "photo_png_crop1.jpg"), icc=False)
