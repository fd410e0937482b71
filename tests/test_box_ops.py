"""Box geometry: hand-computed values and properties of aspect fitting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clipcrop.errors import ParameterError
from clipcrop.ops.box_ops import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    fit_aspect,
    fraction_inside_np,
    generalized_box_iou,
    intersection_np,
    iou_np,
    nms_np,
    parse_aspect,
    round_box,
    union_box,
)


def test_cxcywh_round_trip_and_values():
    b = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    xyxy = box_cxcywh_to_xyxy(b)
    assert torch.allclose(xyxy, torch.tensor([[0.4, 0.3, 0.6, 0.7]]))
    assert torch.allclose(box_xyxy_to_cxcywh(xyxy), b)


def test_iou_and_giou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [4.0, 4.0, 5.0, 5.0]])
    iou, _ = box_iou(a, b)
    assert iou[0, 0].item() == pytest.approx(1 / 7)
    assert iou[0, 1].item() == 0.0
    giou = generalized_box_iou(a, b)
    # hull of a and the far box is 5x5=25, union 4+1=5 -> giou = 0 - 20/25
    assert giou[0, 1].item() == pytest.approx(-0.8)
    assert iou_np(a.numpy(), b.numpy())[0, 0] == pytest.approx(1 / 7)


def test_intersection_and_fraction_inside_hand_computed():
    a = np.array([[0, 0, 4, 4], [10, 10, 12, 12]], dtype=np.float64)
    b = np.array([[2, 2, 6, 6], [0, 0, 1, 8], [3, 0, 3, 4]], dtype=np.float64)
    # 2x2 overlap, 1x4 overlap, zero-width box; the second row touches nothing
    assert intersection_np(a, b).tolist() == [[4.0, 4.0, 0.0], [0.0, 0.0, 0.0]]
    outer = np.array([0, 0, 5, 5], dtype=np.float64)
    boxes = np.array([[1, 1, 3, 3], [4, 0, 8, 2], [6, 6, 7, 7], [2, 2, 2, 4]], dtype=np.float64)
    # inside, a quarter inside (1x2 of 4x2), outside, zero area (outside by definition)
    assert fraction_inside_np(boxes, outer).tolist() == [1.0, 0.25, 0.0, 0.0]
    # iou_np builds on the same intersection: 4 / (16 + 16 - 4)
    assert iou_np(a[:1], b[:1])[0, 0] == pytest.approx(4 / 28)


def test_union_box():
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.1, 0.6, 0.3]])
    assert torch.allclose(union_box(boxes), torch.tensor([0.1, 0.1, 0.6, 0.4]))


def test_nms_keeps_distinct_best_first():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9.5], [20, 20, 30, 30]], dtype=float)
    scores = np.array([0.5, 0.9, 0.7])
    assert nms_np(boxes, scores, 0.7).tolist() == [1, 2]
    assert nms_np(boxes, scores, 1.0).tolist() == [1, 2, 0]


@pytest.mark.parametrize(
    "text,ratio", [("16:9", 16 / 9), ("1:1", 1.0), ("4/5", 0.8), ("1.5", 1.5), ((3, 2), 1.5)]
)
def test_parse_aspect(text, ratio):
    assert parse_aspect(text) == pytest.approx(ratio)


@pytest.mark.parametrize("bad", ["0:1", "1:0", "-1:2", "a:b", "1:2:3", "inf:1", "nan", (0, 1), 0.0])
def test_parse_aspect_rejects(bad):
    with pytest.raises(ParameterError):
        parse_aspect(bad)


def test_parse_aspect_free():
    assert parse_aspect(None) is None and parse_aspect("free") is None


def test_fit_aspect_grows_before_shrinking():
    # 100x50 box in a 1000x1000 image, ratio 1:1 -> grows to 100x100 around the same centre
    out = fit_aspect(np.array([100, 100, 200, 150]), 1.0, 1000, 1000)
    assert out.tolist() == pytest.approx([100, 75, 200, 175])
    # near the border: shifted inside, still 100x100
    out = fit_aspect(np.array([0, 0, 100, 50]), 1.0, 1000, 1000)
    assert out.tolist() == pytest.approx([0, 0, 100, 100])
    # too tall for the image: shrinks
    out = fit_aspect(np.array([0, 0, 100, 100]), 4.0, 200, 100)
    assert out.tolist() == pytest.approx([0, 25, 100, 50]) or (out[2] - out[0]) / (
        out[3] - out[1]
    ) == pytest.approx(4)


@settings(max_examples=300, deadline=None)
@given(
    w=st.integers(2, 4000),
    h=st.integers(2, 4000),
    fx0=st.floats(0, 1),
    fy0=st.floats(0, 1),
    fw=st.floats(0.01, 1),
    fh=st.floats(0.01, 1),
    rw=st.integers(1, 21),
    rh=st.integers(1, 21),
)
def test_fit_aspect_properties(w, h, fx0, fy0, fw, fh, rw, rh):
    ratio = rw / rh
    x0, y0 = fx0 * (w - 1), fy0 * (h - 1)
    box = np.array([x0, y0, min(w, x0 + max(1.0, fw * w)), min(h, y0 + max(1.0, fh * h))])
    out = fit_aspect(box, ratio, w, h)
    # exact ratio, inside the image
    assert (out[2] - out[0]) / (out[3] - out[1]) == pytest.approx(ratio, rel=1e-6)
    assert out[0] >= -1e-6 and out[1] >= -1e-6 and out[2] <= w + 1e-6 and out[3] <= h + 1e-6
    # grow before shrink: when the grown box fits, it contains the original
    bw, bh = box[2] - box[0], box[3] - box[1]
    gw, gh = (bh * ratio, bh) if bw / bh < ratio else (bw, bw / ratio)
    if gw <= w and gh <= h:
        assert out[0] <= box[0] + 1e-6 and out[1] <= box[1] + 1e-6
        assert out[2] >= box[2] - 1e-6 and out[3] >= box[3] - 1e-6
    # integer rounding keeps the ratio within one pixel
    r = round_box(out, w, h, ratio)
    rwid, rhei = r[2] - r[0], r[3] - r[1]
    assert 0 <= r[0] < r[2] <= w and 0 <= r[1] < r[3] <= h
    assert abs(rwid - rhei * ratio) <= max(1.0, ratio) + 1e-6 or abs(rhei - rwid / ratio) <= 1.0 + 1e-6
