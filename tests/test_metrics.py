"""Golden values for the evaluation metrics."""

from __future__ import annotations

import numpy as np
import pytest

from clipcrop.evaluation.metrics import (
    GaicAccumulator,
    IoUAccumulator,
    gaic_acc,
    gaic_metrics,
    iou_acc,
    iou_acc_key,
    iou_mean_max,
    mos_threshold,
    textcrop_metrics,
)


def test_iou_mean_max_golden():
    human = [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]  # IoU 1, 50/150, 0
    mean, mx = iou_mean_max([0, 0, 10, 10], human)
    assert mean == pytest.approx((1 + 1 / 3 + 0) / 3) and mx == pytest.approx(1.0)
    mean, mx = iou_mean_max(np.array([0, 0, 10, 10]), np.array([[0, 0, 10, 20]]))  # a single box
    assert mean == mx == pytest.approx(0.5)
    with pytest.raises(ValueError):
        iou_mean_max([0, 0, 1, 1], np.zeros((0, 4)))


def test_textcrop_metrics_average_over_samples():
    samples = [([0, 0, 10, 10], [[0, 0, 10, 10], [5, 0, 15, 10]]), ([0, 0, 10, 10], [[0, 0, 10, 20]])]
    out = textcrop_metrics(samples)
    assert out["iou_mean"] == pytest.approx(((1 + 1 / 3) / 2 + 0.5) / 2)
    assert out["iou_max"] == pytest.approx((1 + 0.5) / 2)
    assert out["num_samples"] == 2
    acc = IoUAccumulator()
    for pred, human in samples:
        acc.update(pred, human)
    assert acc.compute()["iou_mean"] == pytest.approx(out["iou_mean"]) and len(acc) == 2
    with pytest.raises(ValueError):
        IoUAccumulator().compute()


# Ten crops far apart (IoU 0 between them); crop i is (20 i, 0, 20 i + 10, 10).
CROPS = np.array([[20 * i, 0, 20 * i + 10, 10] for i in range(10)], dtype=float)
MOS = np.array([5.0, 4.5, 4.0, 4.0, 3.5, 3.5, 3.5, 2.0, 1.0, 1.0])


def test_mos_threshold_with_ties_and_few_crops():
    assert mos_threshold(MOS, 5) == 3.5  # sorted descending, element 4
    assert mos_threshold(MOS, 10) == 1.0
    assert mos_threshold([3.0, 2.0], 5) == 2.0  # fewer than n crops: the minimum
    assert mos_threshold([2.5], 10) == 2.5


def test_gaic_acc_ties_at_the_fifth_mos():
    near6 = CROPS[6] + [1, 0, 1, 0]  # overlaps crop 6 most; crop 6 is 7th by order but tied at the 5th MOS
    assert gaic_acc(near6, CROPS, MOS, 5)
    assert not gaic_acc(CROPS[7], CROPS, MOS, 5)  # MOS 2.0 < 3.5
    assert gaic_acc(CROPS[7], CROPS, MOS, 10)  # 2.0 >= 1.0
    assert gaic_acc(CROPS[0], CROPS, MOS, 5)


def test_gaic_acc_single_box_and_no_good_crop():
    assert gaic_acc([0, 0, 5, 5], [[0, 0, 10, 10]], [1.5], 5)  # the only crop is its own n-th best
    crops, mos = CROPS[:3], np.array([3.0, 3.0, 2.0])  # nothing >= 4: unaffected, ranks still count
    assert gaic_acc(crops[1], crops, mos, 1)
    assert not gaic_acc(crops[2], crops, mos, 2)
    assert gaic_acc(crops[2], crops, mos, 5)  # fewer than 5 crops: threshold is the minimum
    assert not gaic_acc([900, 900, 910, 910], crops, mos, 5)  # overlaps nothing: a miss, not crop 0
    with pytest.raises(ValueError):
        gaic_acc([0, 0, 1, 1], np.zeros((0, 4)), [], 5)


def test_iou_acc_jia():
    best = [[0, 0, 100, 100]]
    far = [500, 500, 510, 510]
    iou86 = [0, 0, 100, 86]
    iou92 = [0, 0, 100, 92]
    preds = [far] * 4 + [iou86] + [far] * 5
    assert iou_acc(preds, best, [4.0], 5, 0.85)
    assert not iou_acc(preds, best, [4.0], 5, 0.9)
    preds = [far] * 5 + [iou92] + [far] * 4  # 6th: only top-10 counts
    assert not iou_acc(preds, best, [4.0], 5, 0.85)
    assert iou_acc(preds, best, [4.0], 10, 0.9)
    # ties at the best MOS: hitting any of them counts; a lower-MOS crop does not
    crops = np.array([[0, 0, 100, 100], [200, 0, 300, 100], [400, 0, 500, 100]], dtype=float)
    assert iou_acc([crops[1]], crops, [3.0, 3.0, 2.0], 5, 0.9)
    assert not iou_acc([crops[2]], crops, [3.0, 3.0, 2.0], 5, 0.9)
    assert iou_acc_key(5, 0.85) == "acc_iou85_top5" and iou_acc_key(10, 0.9) == "acc_iou90_top10"


def test_gaic_metrics_fractions_over_real_number_of_images():
    far = [900, 900, 910, 910]
    img1 = ([CROPS[0]] + [far] * 9, CROPS, MOS)  # top-1 is the best crop: everything hits
    img2 = ([CROPS[7]] + [far] * 9, CROPS, MOS)  # MOS 2: only acc1_10; best crop never predicted
    img3 = ([far] * 5 + [CROPS[0] + [0, 0, 0, -0.8]] + [far] * 4, CROPS, MOS)  # IoU 0.92 at rank 6
    out = gaic_metrics([img1, img2, img3])
    assert out == {
        "acc1_5": pytest.approx(1 / 3),
        "acc1_10": pytest.approx(2 / 3),
        "acc_iou85_top5": pytest.approx(1 / 3),
        "acc_iou85_top10": pytest.approx(2 / 3),
        "acc_iou90_top5": pytest.approx(1 / 3),
        "acc_iou90_top10": pytest.approx(2 / 3),
        "num_samples": 3,
    }
    acc = GaicAccumulator()
    hits = acc.update(*img2)
    assert hits == {
        "acc1_5": False,
        "acc1_10": True,
        "acc_iou85_top5": False,
        "acc_iou85_top10": False,
        "acc_iou90_top5": False,
        "acc_iou90_top10": False,
    }
    assert len(acc) == 1 and acc.compute()["acc1_10"] == 1.0
