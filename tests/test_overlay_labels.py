"""Overlay labels: every rank label readable, even when crops share a corner."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from PIL import Image, ImageColor

from clipcrop.io.render import COLORS, draw_overlay, overlay_labels
from clipcrop.ops.label_layout import layout_labels, overlaps

SIZE = (400, 300)
SHARED_TOP_LEFT = [(0, 0, 200, 150), (0, 0, 300, 200), (0, 0, 400, 300), (0, 0, 120, 90), (0, 0, 250, 250)]
SHARED_BOTTOM_RIGHT = [(100, 100, 400, 300), (200, 150, 400, 300), (0, 0, 400, 300), (300, 250, 400, 300)]
SAME_BOX = [(50, 40, 350, 260)] * 8


def assert_readable(rects, size) -> None:
    for a, b in combinations(rects, 2):
        assert not overlaps(a, b), (a, b)
    for x0, y0, x1, y1 in rects:
        assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1], (x0, y0, x1, y1)


@pytest.mark.parametrize("boxes", [SHARED_TOP_LEFT, SHARED_BOTTOM_RIGHT, SAME_BOX], ids=["tl", "br", "same"])
@pytest.mark.parametrize("with_scores", [False, True])
def test_labels_of_boxes_sharing_a_corner_never_overlap(boxes, with_scores):
    scores = [0.9 - 0.1 * i for i in range(len(boxes))] if with_scores else None
    labels = overlay_labels(SIZE, boxes, SIZE, scores)
    assert [t.split(":")[0] for t, _ in labels] == [str(k) for k in range(1, len(boxes) + 1)]
    assert_readable([r for _, r in labels], SIZE)


def test_labels_on_a_reduced_picture_follow_the_scaled_boxes():
    original = (1600, 1200)  # the boxes are in the original's pixels, the picture is a quarter of it
    boxes = [tuple(4 * v for v in b) for b in SHARED_TOP_LEFT]
    assert_readable([r for _, r in overlay_labels(SIZE, boxes, original)], SIZE)


def test_a_free_corner_keeps_the_usual_place():
    rects = layout_labels([(10, 20, 200, 150), (220, 30, 390, 290)], [(30, 16), (30, 16)], SIZE, inset=2)
    assert rects == [(12, 22, 42, 38), (222, 32, 252, 48)]  # inside each box's top-left corner


def test_the_best_crop_chooses_first_and_no_room_still_gives_a_place():
    rects = layout_labels([(0, 0, 100, 100)] * 2, [(40, 20)] * 2, (100, 100))
    assert rects[0] == (0, 0, 40, 20) and not overlaps(*rects)
    crowded = layout_labels([(0, 0, 20, 20)] * 3, [(20, 20)] * 3, (20, 20))  # one label fills the image
    assert crowded == [(0, 0, 20, 20)] * 3


def test_drawn_labels_are_not_painted_over():
    """On the picture itself: each label's rectangle holds only its own colour and its black text."""
    image = Image.new("RGB", SIZE, (128, 128, 128))
    out = draw_overlay(image, SHARED_TOP_LEFT, SIZE)
    pixels = np.asarray(out)
    for rank, (_, (x0, y0, x1, y1)) in enumerate(overlay_labels(SIZE, SHARED_TOP_LEFT, SIZE), start=1):
        patch = pixels[y0:y1, x0:x1].reshape(-1, 3).astype(int)
        color = np.array(ImageColor.getrgb(COLORS[rank - 1]))
        own = np.abs(patch - color).sum(axis=1) < 40
        ink = patch.sum(axis=1) < 200  # the digit (anti-aliased edges in between)
        assert own.mean() > 0.5 and ink.any(), rank
        assert (own | ink).mean() > 0.8, rank
