"""``clipcrop check-data`` on a clean GAIC-format fixture and on broken copies of it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from gaic_fixture import PHOTOS, write_gaic

from clipcrop.cli.main import main
from clipcrop.data.gaic_check import check_gaic

VAL = ["chelsea.png", "rocket.jpg", "grace_hopper.jpg"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return write_gaic(
        tmp_path_factory.mktemp("gaic"), {"train": list(PHOTOS), "val": VAL, "test": list(PHOTOS)}
    )


def run(capsys, *argv: str) -> tuple[int, list[str], str]:
    rc = main(["check-data", *argv])
    out = capsys.readouterr()
    return rc, out.out.splitlines(), out.err


def test_a_clean_root_has_no_errors(clean, capsys):
    rc, lines, _ = run(capsys, "--gaic-root", str(clean.root), "--text-annotations", str(clean.text_dir))
    assert rc == 0
    # 28 grid crops per image, all rated; only the split sizes differ from GAIC's
    assert "train: 6 images, 6 annotation files, 168 rated crops, 6 captions" in lines
    assert "val: 3 images, 3 annotation files, 84 rated crops, 3 captions" in lines
    assert lines[-1] == "0 errors, 3 warnings"
    assert (
        f"{clean.root / 'images' / 'train'}: warning: 6 images; GAIC's journal version has 2636 in train"
        in lines
    )
    assert (
        f"{clean.root / 'images' / 'val'}: warning: 3 images; GAIC's journal version has 200 in val" in lines
    )


def test_every_problem_of_a_broken_root_gets_its_line(clean, tmp_path, capsys):
    root = tmp_path / "gaic"
    shutil.copytree(clean.root, root)
    text = root / "text"
    ann = root / "annotations" / "train"
    (ann / "coffee.txt").unlink()  # an image without annotations
    (ann / "ghost.txt").write_text("0 0 10 10 3\n")  # annotations without an image
    lines = (ann / "astronaut.txt").read_text().splitlines()
    lines[1] = "0 0 10 10"  # 4 fields
    lines[2] = "0 0 ten 10 3"
    lines[3] = "0 0 10 10 7"  # MOS outside 1..5
    lines[4] = "0 0 210 10 3"  # y2 = 210: 50 px below a 160 px high image
    lines[5] = "5 5 5 10 3"  # empty
    lines[6] = "0 0 10 10 -2"  # unrated: fine
    (ann / "astronaut.txt").write_text("\n".join(lines) + "\n")
    (ann / "rocket.txt").write_text("0 0 10 10 -2\n")  # nothing rated: a warning
    (root / "images" / "train" / "chelsea.jpg").write_bytes(b"not a jpeg")
    captions = json.loads((text / "train.json").read_text())
    del captions["motorcycle_left.jpg"]
    captions["extra.jpg"] = "a cat that is not there"
    captions["grace_hopper.jpg"] = ""
    (text / "train.json").write_text(json.dumps(captions))
    (text / "valid.json").unlink()
    shutil.rmtree(root / "images" / "test")

    rc, out, _ = run(capsys, "--gaic-root", str(root), "--text-annotations", str(text))
    assert rc == 1
    a = ann / "astronaut.txt"
    expected = [
        f"{root / 'images' / 'train' / 'coffee.jpg'}: error: no annotation file {ann / 'coffee.txt'}",
        f"{ann / 'ghost.txt'}: error: annotation file without an image",
        f"{a}:2: error: expected 'y1 x1 y2 x2 MOS', got '0 0 10 10'",
        f"{a}:3: error: non-numeric value in '0 0 ten 10 3'",
        f"{a}:4: error: MOS 7 outside 1..5 (unrated is -2)",
        f"{a}:5: error: crop '0 0 210 10 3' reaches 50 px outside the",
        f"{a}:6: error: empty crop '5 5 5 10 3'",
        f"{ann / 'rocket.txt'}: warning: no rated crops",
        f"{root / 'images' / 'train' / 'chelsea.jpg'}: error: not a readable image",
        f"{text / 'train.json'}: error: no caption for motorcycle_left.jpg",
        f"{text / 'train.json'}: error: caption of 'grace_hopper.jpg' is not a non-empty string: ''",
        f"{text / 'train.json'}: warning: caption for extra.jpg, which is not an image of train",
        f"{text / 'valid.json'}: error: caption file not found (split 'val' uses this name)",
        f"{root / 'images' / 'test'}: error: folder not found",
    ]
    for line in expected:
        assert sum(o.startswith(line) for o in out) == 1, (line, out)
    errors = [o for o in out if ": error: " in o]
    assert len(errors) == 12 and out[-1].startswith("12 errors, ")
    assert not any(":7:" in o for o in out)  # the unrated line is no problem
    report = check_gaic(root, text, ("train",))  # the library says the same
    assert len(report.errors) == 10 and [s.split for s in report.splits] == ["train"]


def test_usage_errors_and_no_torch(tmp_path, capsys):
    rc, _, err = run(capsys, "--gaic-root", str(tmp_path / "nope"))
    assert rc == 2 and err.strip().splitlines()[-1].startswith("clipcrop: error: --gaic-root")
    rc, _, err = run(capsys, "--gaic-root", str(tmp_path), "--splits", "train,dev")
    assert rc == 2 and err.strip().splitlines()[-1] == (
        "clipcrop: error: --splits takes a comma-separated list of train, val, test, got 'train,dev'"
    )
    code = (
        "import sys; from clipcrop.cli.main import main; "
        f"rc = main(['check-data', '--gaic-root', {str(tmp_path)!r}, '--splits', 'val']); "
        "print(rc, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "1 False"  # the missing folders are errors; torch never loaded
