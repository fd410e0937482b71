"""Box utilities. Every function says which box format it takes.

Formats used across ClipCrop:

* ``xyxy``: ``(x0, y0, x1, y1)``, corners, x0 <= x1 and y0 <= y1.
* ``cxcywh``: ``(cx, cy, w, h)``, centre and size (what OWL-ViT's box head and the decoder emit).
* *normalised* coordinates are fractions of the upright image's width (x) and height (y), in [0, 1];
  *pixel* coordinates are in pixels of the upright image.

Torch functions take tensors of shape ``(..., 4)``; the numpy ones are used by post-processing
and training-free candidate generation, where boxes are few and torch dispatch would dominate.
"""

from __future__ import annotations

import numpy as np
import torch


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) cxcywh -> (..., 4) xyxy."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy -> (..., 4) cxcywh."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy -> (...) area (0 for degenerate boxes)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes -> (iou (N, M), union (N, M))."""
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / union.clamp(min=1e-12), union


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalised IoU (Rezatofighi et al. 2019) of (N, 4) and (M, 4) xyxy boxes -> (N, M)."""
    iou, union = box_iou(boxes1, boxes2)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - (hull - union) / hull.clamp(min=1e-12)


def union_box(boxes: torch.Tensor) -> torch.Tensor:
    """Smallest xyxy box holding all (K, 4) xyxy boxes -> (4,). K must be >= 1."""
    return torch.cat([boxes[:, :2].min(dim=0).values, boxes[:, 2:].max(dim=0).values])


# ----------------------------------------------------------------------------- numpy versions


def intersection_np(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas of (N, 4) and (M, 4) xyxy boxes (any units) -> (N, M) float64."""
    b1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(b1[:, None, :2], b2[None, :, :2])
    rb = np.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    return wh[..., 0] * wh[..., 1]


def fraction_inside_np(boxes: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """Share of each (K, 4) xyxy box's area that lies inside the (4,) xyxy box ``outer`` -> (K,).

    1 for a box wholly inside, 0 for one wholly outside; a zero-area box counts as outside.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return intersection_np(boxes, outer)[:, 0] / np.maximum(area, 1e-12)


def iou_np(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes (any units) -> (N, M) float64."""
    b1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    a1 = np.clip(b1[:, 2] - b1[:, 0], 0, None) * np.clip(b1[:, 3] - b1[:, 1], 0, None)
    a2 = np.clip(b2[:, 2] - b2[:, 0], 0, None) * np.clip(b2[:, 3] - b2[:, 1], 0, None)
    inter = intersection_np(b1, b2)
    union = a1[:, None] + a2[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms_np(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression on (N, 4) xyxy boxes.

    Returns the indices kept, best score first. ``iou_threshold >= 1`` keeps every box
    (sorted), which is how callers switch suppression off.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    if iou_threshold >= 1.0 or len(order) == 0:
        return order
    ious = iou_np(boxes, boxes)
    keep: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= ious[i] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


# aspect-ratio helpers live in clipcrop.ops.aspect (numpy only, so the CLI can validate without torch)
from .aspect import fit_aspect, parse_aspect, round_box  # noqa: E402,F401
