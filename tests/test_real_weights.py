"""Slow tests that only a working pretrained OWL-ViT passes.

    CLIPCROP_TEST_WEIGHTS=/path/to/owlvit-base-patch32 .venv/bin/python -m pytest -m slow tests/test_real_weights.py

(``hf download google/owlvit-base-patch32 --local-dir owlvit-base-patch32`` fetches the folder on
a machine with internet access; an OWLv2 folder works too.) Skipped where no weights exist (CI,
these machines). Regions are written down in pixels of skimage's 512 x 512 astronaut photo.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import sample_photo

WEIGHTS = os.environ.get("CLIPCROP_TEST_WEIGHTS")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not WEIGHTS or not os.path.isdir(WEIGHTS), reason="set CLIPCROP_TEST_WEIGHTS to an OWL-ViT folder"
    ),
]

ASTRONAUT = sample_photo("astronaut.png")
#: (x0, y0, x1, y1) pixels in astronaut.png
FACE = (175, 65, 280, 190)  # Eileen Collins' face, hairline to chin
HELMET = (275, 340, 512, 512)  # the black-visored helmet, bottom right
FLAG = (0, 0, 100, 512)  # the US flag along the left edge


@pytest.fixture(scope="module")
def cc():
    from clipcrop import ClipCrop

    return ClipCrop.from_pretrained(WEIGHTS)


def _inside(point: tuple[float, float], region: tuple[int, int, int, int]) -> bool:
    return region[0] <= point[0] <= region[2] and region[1] <= point[1] <= region[3]


def _centre(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


@pytest.mark.parametrize(
    ("query", "region"), [("a human face", FACE), ("a helmet", HELMET), ("a flag", FLAG)]
)
def test_detections_land_in_their_known_regions(cc, query, region):
    best = cc.detect(ASTRONAUT, query=query, top_k=1)[0]
    assert _inside(_centre(best.box), region), (query, best)
    assert best.score > 0.1  # a real match, not the least bad token


def test_top_crop_for_the_face_contains_it(cc):
    from clipcrop.ops.box_ops import fraction_inside_np

    result = cc.crop(ASTRONAUT, query="the astronaut's face", top_k=3)
    inside = fraction_inside_np(np.array([FACE], dtype=float), np.array(result[0].box, dtype=float))[0]
    assert inside >= 0.9, (result[0].box, inside)


def test_text_and_image_queries_of_one_object_give_overlapping_crops(cc, tmp_path):
    from PIL import Image

    from clipcrop.ops.box_ops import iou_np

    Image.open(ASTRONAUT).convert("RGB").crop(HELMET).save(tmp_path / "helmet.png")
    text = cc.crop(ASTRONAUT, query="a helmet", top_k=1)
    image = cc.crop(ASTRONAUT, image_query=tmp_path / "helmet.png", top_k=1)
    assert iou_np(np.array([text.union_box], float), np.array([image.union_box], float))[0, 0] > 0.3
    assert iou_np(np.array([text[0].box], float), np.array([image[0].box], float))[0, 0] > 0.3


def test_two_queries_crop_differently(cc):
    enc = cc.encode(sample_photo("coffee.png"))
    assert enc.crop(query="a coffee cup").union_box != enc.crop(query="a spoon").union_box
