"""GAIC and TextCrop manifest readers on small files written to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipcrop.data.datasets import _load_captions, image_size, load_gaic, load_textcrop
from clipcrop.errors import DatasetError

# the public captions in ../shared beside the checkout (read-only material; skipped where absent)
REAL_CAPTIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gaic-text-annotations"


def _jpeg(path: Path, size: tuple[int, int] = (60, 40), orientation: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, (120, 30, 200))
    if orientation is None:
        img.save(path, "JPEG")
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(path, "JPEG", exif=exif.tobytes())


def _gaic(root: Path, split: str = "train") -> Path:
    """Two 60x40 images; a.txt has a full-image crop, an invalid -2 row and a y-first crop."""
    _jpeg(root / "images" / split / "b.jpg")
    _jpeg(root / "images" / split / "a.jpg")
    ann = root / "annotations" / split
    ann.mkdir(parents=True)
    (ann / "a.txt").write_text("0 0 40 60 4.5\n5 10 35 50 -2\n\n10 20 30 40 3.0\n")
    (ann / "b.txt").write_text("0 0 20 30 2\n")
    return root


def _captions(folder: Path, split_file: str, mapping: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split_file}.json").write_text(json.dumps(mapping))
    return folder


def test_load_gaic(tmp_path: Path):
    root = _gaic(tmp_path / "GAIC")
    text = _captions(tmp_path / "text", "train", {"a.jpg": "a dog", "b.jpg": " a cat ", "zzz.jpg": "unused"})
    samples = load_gaic(root, "train", text)
    assert [s.name for s in samples] == ["a.jpg", "b.jpg"]  # sorted
    a, b = samples
    assert (a.width, a.height) == (60, 40)
    assert a.caption == "a dog" and b.caption == "a cat"
    # "y1 x1 y2 x2": 0 0 40 60 is the whole 60x40 image; 10 20 30 40 is x 20..40, y 10..30; -2 row gone
    assert np.array_equal(a.boxes_xyxy_px, [[0, 0, 60, 40], [20, 10, 40, 30]])
    assert np.array_equal(a.mos, [4.5, 3.0])
    assert np.allclose(a.boxes_xyxy_norm()[1], [20 / 60, 10 / 40, 40 / 60, 30 / 40])
    assert a.best_crop_index() == 0
    assert a.boxes_xyxy_px.dtype == np.float64 and a.boxes_xyxy_px.shape == (2, 4)


def test_gaic_without_captions(tmp_path: Path):
    samples = load_gaic(_gaic(tmp_path / "GAIC"), "train")
    assert all(s.caption is None for s in samples)


def test_missing_caption_raises_and_can_be_allowed(tmp_path: Path):
    root = _gaic(tmp_path / "GAIC")
    text = _captions(tmp_path / "text", "train", {"a.jpg": "a dog", "b.jpg": "  "})
    with pytest.raises(DatasetError, match=r"b\.jpg"):
        load_gaic(root, "train", text)
    samples = load_gaic(root, "train", text, require_captions=False)
    assert [s.caption for s in samples] == ["a dog", None]
    absent = _captions(tmp_path / "text2", "train", {"b.jpg": "a cat"})
    with pytest.raises(DatasetError, match=r"without a caption.*1: a\.jpg"):
        load_gaic(root, "train", absent)


def test_val_split_reads_valid_json(tmp_path: Path):
    root = _gaic(tmp_path / "GAIC", "val")
    text = _captions(tmp_path / "text", "valid", {"a.jpg": "x", "b.jpg": "y"})
    assert [s.caption for s in load_gaic(root, "val", text)] == ["x", "y"]
    assert len(load_gaic(root, "valid", text)) == 2
    with pytest.raises(DatasetError, match=r"valid\.json"):
        load_gaic(root, "val", tmp_path / "nowhere")


def test_missing_folders_and_files(tmp_path: Path):
    with pytest.raises(DatasetError, match=r"images/train"):
        load_gaic(tmp_path, "train")
    root = _gaic(tmp_path / "GAIC")
    (root / "annotations" / "train" / "b.txt").unlink()
    with pytest.raises(DatasetError, match=r"without an annotation file.*b\.jpg"):
        load_gaic(root, "train")
    with pytest.raises(DatasetError, match="split"):
        load_gaic(root, "dev")


def test_malformed_annotation_line(tmp_path: Path):
    root = _gaic(tmp_path / "GAIC")
    (root / "annotations" / "train" / "b.txt").write_text("0 0 20 30\n")
    with pytest.raises(DatasetError, match=r"b\.txt:1"):
        load_gaic(root, "train")
    (root / "annotations" / "train" / "b.txt").write_text("30 0 20 30 3\n")  # y2 < y1
    with pytest.raises(DatasetError, match="empty crop"):
        load_gaic(root, "train")


def test_all_invalid_rows_give_zero_crops(tmp_path: Path):
    root = _gaic(tmp_path / "GAIC")
    (root / "annotations" / "train" / "b.txt").write_text("0 0 20 30 -2\n")
    b = load_gaic(root, "train")[1]
    assert b.boxes_xyxy_px.shape == (0, 4) and b.mos.shape == (0,)


def test_image_size_is_upright(tmp_path: Path):
    _jpeg(tmp_path / "r.jpg", (60, 40), orientation=6)  # rotated 90 degrees: upright is 40x60
    assert image_size(tmp_path / "r.jpg") == (40, 60)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="bad.jpg"):
        image_size(tmp_path / "bad.jpg")


@pytest.mark.skipif(not (REAL_CAPTIONS / "valid.json").is_file(), reason="shared caption files not present")
def test_real_caption_file_format():
    captions = _load_captions(REAL_CAPTIONS, "val")
    assert len(captions) > 0
    name, text = next(iter(captions.items()))
    assert name.endswith(".jpg") and isinstance(text, str)


def _textcrop(root: Path, entries: object) -> Path:
    _jpeg(root / "imgs" / "1.jpg", (100, 50))
    _jpeg(root / "queries" / "q.jpg", (10, 10))
    (root / "annotations.json").write_text(json.dumps(entries))
    return root


def test_load_textcrop_valid(tmp_path: Path):
    entries = [
        {"image": "imgs/1.jpg", "query": " red handbag ", "boxes": [[0, 0, 50, 50], [10, 5, 100, 45]]},
        {"image": "imgs/1.jpg", "image_query": "queries/q.jpg", "boxes": [[1, 2, 3, 4]]},
        {"image": "imgs/1.jpg", "query": "both", "image_query": "queries/q.jpg", "boxes": [[1, 2, 30, 40]]},
    ]
    samples = load_textcrop(_textcrop(tmp_path, entries))
    assert [s.index for s in samples] == [0, 1, 2]
    s0, s1, s2 = samples
    assert s0.query == "red handbag" and s0.image_query_path is None
    assert np.array_equal(s0.boxes_xyxy_px, [[0, 0, 50, 50], [10, 5, 100, 45]])
    assert (s0.width, s0.height) == (100, 50)
    assert np.allclose(s0.boxes_xyxy_norm()[1], [0.1, 0.1, 1.0, 0.9])
    assert s1.query is None and s1.image_query_path == tmp_path / "queries" / "q.jpg"
    assert s2.query == "both" and s2.image_query_path is not None


def test_load_textcrop_custom_manifest_path(tmp_path: Path):
    root = _textcrop(tmp_path, [])
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"image": "imgs/1.jpg", "query": "q", "boxes": [[0, 0, 10, 10]]}]))
    assert len(load_textcrop(root, other)) == 1
    assert load_textcrop(root) == []


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"image": "imgs/1.jpg", "query": "q"}, "boxes"),
        ({"image": "imgs/1.jpg", "query": "q", "boxes": [[0, 0, 10]]}, "box 0"),
        ({"image": "imgs/1.jpg", "query": "q", "boxes": [[10, 0, 5, 10]]}, "empty"),
        ({"image": "imgs/1.jpg", "query": "q", "boxes": [[0, 0, 500, 10]]}, "outside"),
        ({"image": "imgs/1.jpg", "query": "q", "boxes": [[0.1, 0.1, 0.5, 0.5]]}, "normalised"),
        ({"image": "imgs/missing.jpg", "query": "q", "boxes": [[0, 0, 10, 10]]}, "not found"),
        ({"image": "imgs/1.jpg", "boxes": [[0, 0, 10, 10]]}, "query"),
        ({"image": "imgs/1.jpg", "query": "", "boxes": [[0, 0, 10, 10]]}, "query"),
        (
            {"image": "imgs/1.jpg", "image_query": "queries/none.jpg", "boxes": [[0, 0, 10, 10]]},
            "query image",
        ),
        ("just a string", "object"),
    ],
)
def test_load_textcrop_invalid_entry_names_its_index(tmp_path: Path, bad: object, message: str):
    good = {"image": "imgs/1.jpg", "query": "q", "boxes": [[0, 0, 10, 10]]}
    root = _textcrop(tmp_path, [good, bad])
    with pytest.raises(DatasetError, match=rf"entry 1\b.*{message}"):
        load_textcrop(root)


def test_load_textcrop_bad_manifest(tmp_path: Path):
    with pytest.raises(DatasetError, match="not found"):
        load_textcrop(tmp_path)
    (tmp_path / "annotations.json").write_text("{")
    with pytest.raises(DatasetError, match="JSON"):
        load_textcrop(tmp_path)
    (tmp_path / "annotations.json").write_text("{}")
    with pytest.raises(DatasetError, match="list"):
        load_textcrop(tmp_path)
