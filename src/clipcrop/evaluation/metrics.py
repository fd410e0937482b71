"""Evaluation metrics of the paper (4.2-4.4), in numpy.

All boxes are ``xyxy``; any unit works (pixels or normalised) as long as the predicted and the
annotated boxes of one sample use the same one. Results are plain Python floats / bools.

* **IoU-Mean / IoU-Max** (Horanyi-PR, TextCrop): per sample, the mean and the max IoU between the
  predicted crop and each human crop; averaged over samples.
* **Acc1/5, Acc1/10** (GAIC, Zeng et al.): the top-1 predicted crop is identified with the
  annotated crop it overlaps most (highest IoU, so a regression model can be scored on GAIC's
  anchor grid); the image counts if that crop's MOS is among the image's ``n`` best, ties
  included (MOS >= the ``n``-th highest MOS). No overlap with any annotated crop is a miss.
* **IoU accuracy** (Jia et al.): the image counts if any of the top-``k`` predicted crops has
  IoU >= ``t`` with the best annotated crop (highest MOS; with ties, any of the tied crops).

Every average divides by the number of samples actually given (not a hard-coded dataset size).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..ops.box_ops import iou_np

#: (n) of Acc1/n.
GAIC_ACC_NS: tuple[int, ...] = (5, 10)
#: (k, t) pairs of Jia et al.'s IoU accuracy, key ``acc_iou{round(100 t)}_top{k}``.
IOU_ACC_SETTINGS: tuple[tuple[int, float], ...] = ((5, 0.85), (10, 0.85), (5, 0.9), (10, 0.9))


def _boxes(a: object, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.size % 4 != 0 or arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != 4):
        raise ValueError(f"{name} must be (4,) or (K, 4) xyxy boxes, got shape {arr.shape}")
    return arr.reshape(-1, 4)


def _crops_and_mos(crops_xyxy: object, mos: object) -> tuple[np.ndarray, np.ndarray]:
    crops = _boxes(crops_xyxy, "crops_xyxy")
    scores = np.asarray(mos, dtype=np.float64).reshape(-1)
    if len(crops) != len(scores):
        raise ValueError(f"{len(crops)} crops but {len(scores)} MOS values")
    if len(crops) == 0:
        raise ValueError("an image without annotated crops cannot be scored")
    return crops, scores


# ----------------------------------------------------------------------------- IoU mean / max


def iou_mean_max(pred_box_xyxy: object, human_boxes: object) -> tuple[float, float]:
    """(4,) predicted crop vs (K, 4) human crops, K >= 1 -> (mean IoU, max IoU)."""
    pred = _boxes(pred_box_xyxy, "pred_box_xyxy")
    if len(pred) != 1:
        raise ValueError(f"pred_box_xyxy must be one box, got {len(pred)}")
    human = _boxes(human_boxes, "human_boxes")
    if len(human) == 0:
        raise ValueError("human_boxes is empty")
    ious = iou_np(pred, human)[0]
    return float(ious.mean()), float(ious.max())


class IoUAccumulator:
    """Running IoU-Mean / IoU-Max over samples (Horanyi-PR, TextCrop)."""

    def __init__(self) -> None:
        self._means: list[float] = []
        self._maxes: list[float] = []

    def __len__(self) -> int:
        return len(self._means)

    def update(self, pred_box_xyxy: object, human_boxes: object) -> tuple[float, float]:
        """Add one sample; returns its ``(mean, max)`` IoU."""
        mean, mx = iou_mean_max(pred_box_xyxy, human_boxes)
        self._means.append(mean)
        self._maxes.append(mx)
        return mean, mx

    def compute(self) -> dict[str, float]:
        """``{"iou_mean", "iou_max", "num_samples"}``; raises if no sample was added."""
        if not self._means:
            raise ValueError("no samples")
        return {
            "iou_mean": float(np.mean(self._means)),
            "iou_max": float(np.mean(self._maxes)),
            "num_samples": len(self._means),
        }


def textcrop_metrics(samples: Iterable[tuple[object, object]]) -> dict[str, float]:
    """``[(pred_box (4,), human_boxes (K, 4)), ...]`` -> ``{"iou_mean", "iou_max", "num_samples"}``."""
    acc = IoUAccumulator()
    for pred, human in samples:
        acc.update(pred, human)
    return acc.compute()


# ----------------------------------------------------------------------------- GAIC


def mos_threshold(mos: object, n: int) -> float:
    """The ``n``-th highest MOS (ties kept: sorted descending, element ``n - 1``); the lowest MOS
    when the image has fewer than ``n`` crops."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    scores = np.sort(np.asarray(mos, dtype=np.float64).reshape(-1))[::-1]
    if len(scores) == 0:
        raise ValueError("no MOS values")
    return float(scores[min(n, len(scores)) - 1])


def gaic_acc(top1_box: object, crops_xyxy: object, mos: object, n: int) -> bool:
    """Acc1/n for one image: does the top-1 crop hit one of the image's ``n`` best crops?

    Args:
        top1_box: (4,) the model's best crop.
        crops_xyxy: (K, 4) the image's annotated crops; mos: (K,) their MOS.
        n: 5 or 10 in the literature.

    The top-1 crop is identified with the annotated crop of highest IoU (first in annotation
    order on an exact tie); it counts when that crop's MOS >= :func:`mos_threshold` ``(mos, n)``.
    A top-1 crop that overlaps no annotated crop at all (IoU 0 with each) counts as a miss rather
    than being identified with an arbitrary crop.
    """
    crops, scores = _crops_and_mos(crops_xyxy, mos)
    pred = _boxes(top1_box, "top1_box")
    if len(pred) != 1:
        raise ValueError(f"top1_box must be one box, got {len(pred)}")
    ious = iou_np(pred, crops)[0]
    if not ious.max() > 0:  # overlaps no annotated crop: nothing to identify it with, a miss
        return False
    nearest = int(np.argmax(ious))
    return bool(scores[nearest] >= mos_threshold(scores, n))


def iou_acc(pred_boxes_ranked: object, crops_xyxy: object, mos: object, k: int, t: float) -> bool:
    """Jia et al.'s accuracy for one image: any of the first ``k`` predictions (best first) has
    IoU >= ``t`` with a best annotated crop (the highest MOS; any of them on ties)."""
    crops, scores = _crops_and_mos(crops_xyxy, mos)
    preds = _boxes(pred_boxes_ranked, "pred_boxes_ranked")[:k]
    if len(preds) == 0:
        return False
    best = crops[scores == scores.max()]
    return bool((iou_np(preds, best) >= t).any())


def iou_acc_key(k: int, t: float) -> str:
    """Result key of :func:`iou_acc`: ``acc_iou85_top5`` for ``k=5, t=0.85``."""
    return f"acc_iou{round(100 * t)}_top{k}"


class GaicAccumulator:
    """Running GAIC metrics: ``acc1_5``, ``acc1_10`` and Jia et al.'s ``acc_iou{85,90}_top{5,10}``."""

    def __init__(
        self,
        ns: tuple[int, ...] = GAIC_ACC_NS,
        iou_settings: tuple[tuple[int, float], ...] = IOU_ACC_SETTINGS,
    ) -> None:
        self.ns = tuple(ns)
        self.iou_settings = tuple(iou_settings)
        self._hits: dict[str, int] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def update(self, pred_boxes_ranked: object, crops_xyxy: object, mos: object) -> dict[str, bool]:
        """Add one image.

        Args:
            pred_boxes_ranked: (P, 4) predicted crops, best first (P >= 1; P >= 10 for top-10).
            crops_xyxy: (K, 4) annotated crops, same units; mos: (K,) their MOS.

        Returns:
            This image's hits by metric key.
        """
        preds = _boxes(pred_boxes_ranked, "pred_boxes_ranked")
        if len(preds) == 0:
            raise ValueError("no predicted crops")
        hits = {f"acc1_{n}": gaic_acc(preds[0], crops_xyxy, mos, n) for n in self.ns}
        for k, t in self.iou_settings:
            hits[iou_acc_key(k, t)] = iou_acc(preds, crops_xyxy, mos, k, t)
        for key, hit in hits.items():
            self._hits[key] = self._hits.get(key, 0) + int(hit)
        self._count += 1
        return hits

    def compute(self) -> dict[str, float]:
        """Fractions in [0, 1] by key, plus ``"num_samples"``; raises if no image was added."""
        if self._count == 0:
            raise ValueError("no samples")
        out: dict[str, float] = {key: hits / self._count for key, hits in self._hits.items()}
        out["num_samples"] = self._count
        return out


def gaic_metrics(samples: Iterable[tuple[object, object, object]]) -> dict[str, float]:
    """``[(pred_boxes_ranked (P, 4), crops_xyxy (K, 4), mos (K,)), ...]`` ->
    ``{"acc1_5", "acc1_10", "acc_iou85_top5", "acc_iou85_top10", "acc_iou90_top5",
    "acc_iou90_top10", "num_samples"}`` (fractions in [0, 1]; multiply by 100 for the paper's tables)."""
    acc = GaicAccumulator()
    for preds, crops, mos in samples:
        acc.update(preds, crops, mos)
    return acc.compute()


__all__ = [
    "GAIC_ACC_NS",
    "IOU_ACC_SETTINGS",
    "GaicAccumulator",
    "IoUAccumulator",
    "gaic_acc",
    "gaic_metrics",
    "iou_acc",
    "iou_acc_key",
    "iou_mean_max",
    "mos_threshold",
    "textcrop_metrics",
]
