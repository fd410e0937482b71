"""Hungarian matching between predicted crops and good annotated crops (paper 3.3).

ClipCrop, like Jia et al. and DETR, predicts a *set* of ``M`` crops in one pass. The loss must not
depend on the order of that set, so before computing box losses each annotated positive crop is
paired with one predicted crop by a minimum-cost bipartite matching (Kuhn's Hungarian algorithm,
``scipy.optimize.linear_sum_assignment``). The matching itself is not differentiated: it only
decides *which* predictions are pulled towards *which* targets, hence ``torch.no_grad()``.

Box formats: all boxes here are ``cxcywh`` normalised to the (mosaic) image's width and height,
i.e. in ``[0, 1]``, which is what the decoder emits. GIoU is computed after converting to ``xyxy``.

Cost of pairing prediction ``i`` with target ``j`` (lower is better)::

    C[i, j] = - cost_score * p[i, j]
              + cost_l1    * || box_i - tgt_j ||_1        (cxcywh)
              - cost_giou  * GIoU(box_i, tgt_j)           (xyxy)

``p[i, j]`` is ``sigmoid(pred_logits[i])`` (a crop's quality score, the same for every target),
or, when ``outputs`` carries ``"pred_class_logits"`` (B, M, C) and every target a ``"labels"``
(K,) int64, ``sigmoid(pred_class_logits[i, labels[j]])``: the class-aware cost that a detection
fine-tuning of the backbone can reuse without a second matcher.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..ops.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

MatchIndices = list[tuple[torch.Tensor, torch.Tensor]]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of predicted crops to target crops, per image.

    Args:
        cost_score: weight of the (negated) score / class probability term.
        cost_l1: weight of the L1 distance of the normalised ``cxcywh`` boxes.
        cost_giou: weight of the (negated) generalised IoU of the ``xyxy`` boxes.

    The defaults (1, 5, 2) are DETR's ratios for box L1 and GIoU, as used by Jia et al.;
    keep them equal to the criterion's loss weights so that matching minimises what the
    loss will measure.
    """

    def __init__(self, cost_score: float = 1.0, cost_l1: float = 5.0, cost_giou: float = 2.0) -> None:
        super().__init__()
        if cost_score == 0 and cost_l1 == 0 and cost_giou == 0:
            raise ValueError("all matching costs are 0: the assignment would be arbitrary")
        self.cost_score = float(cost_score)
        self.cost_l1 = float(cost_l1)
        self.cost_giou = float(cost_giou)

    @torch.no_grad()
    def forward(
        self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> MatchIndices:
        """Match every image's predictions to its targets.

        Args:
            outputs: ``"pred_boxes"`` (B, M, 4) normalised cxcywh; ``"pred_logits"`` (B, M) raw
                score logits (before sigmoid); optionally ``"pred_class_logits"`` (B, M, C) raw
                per-class logits, which switches the score term to the class-aware one.
            targets: B dicts, each with ``"boxes"`` (K_b, 4) normalised cxcywh of the crops to
                match (only the positive ones; K_b may be 0) and, when ``"pred_class_logits"`` is
                given, ``"labels"`` (K_b,) int64 class indices into C.

        Returns:
            B pairs ``(pred_idx, tgt_idx)`` of int64 CPU tensors of equal length
            ``min(M, K_b)``: prediction ``pred_idx[k]`` is matched to target ``tgt_idx[k]``.
            ``pred_idx`` is sorted ascending (``linear_sum_assignment``'s row order).

        Raises:
            ValueError: shapes disagree, labels are missing, or the cost has NaN/inf (which
                usually means the model produced NaN boxes).
        """
        pred_boxes = outputs["pred_boxes"]
        if pred_boxes.dim() != 3 or pred_boxes.shape[-1] != 4:
            raise ValueError(f"pred_boxes must be (B, M, 4), got {tuple(pred_boxes.shape)}")
        batch, num_queries = pred_boxes.shape[:2]
        if len(targets) != batch:
            raise ValueError(f"{len(targets)} targets for a batch of {batch} images")
        class_logits = outputs.get("pred_class_logits")

        sizes = [int(t["boxes"].shape[0]) for t in targets]
        empty = torch.empty(0, dtype=torch.int64)
        if sum(sizes) == 0 or num_queries == 0:
            return [(empty.clone(), empty.clone()) for _ in targets]

        # Costs for the whole batch at once (one big matrix, DETR-style), in float32 so that
        # half-precision training does not make ties or infs; cut per image afterwards.
        out_boxes = pred_boxes.flatten(0, 1).float()  # (B*M, 4)
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(out_boxes)  # (sum K, 4)

        if class_logits is not None:
            if any("labels" not in t for t in targets):
                raise ValueError('"pred_class_logits" given but a target has no "labels"')
            prob = class_logits.flatten(0, 1).float().sigmoid()  # (B*M, C)
            tgt_labels = torch.cat([t["labels"] for t in targets]).to(device=prob.device, dtype=torch.int64)
            score = prob[:, tgt_labels]  # (B*M, sum K)
        else:
            logits = outputs["pred_logits"]
            if logits.shape[:2] != (batch, num_queries) or logits.numel() != batch * num_queries:
                raise ValueError(
                    f"pred_logits must be (B, M) = {(batch, num_queries)}, got {tuple(logits.shape)}"
                )
            score = logits.reshape(-1, 1).float().sigmoid().expand(-1, tgt_boxes.shape[0])

        cost_l1 = torch.cdist(out_boxes, tgt_boxes, p=1)
        cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(out_boxes), box_cxcywh_to_xyxy(tgt_boxes))
        cost = self.cost_l1 * cost_l1 - self.cost_score * score + self.cost_giou * cost_giou
        cost = cost.view(batch, num_queries, -1).cpu()
        if not torch.isfinite(cost).all():
            raise ValueError("matching cost is not finite (NaN or inf in pred_boxes / logits?)")

        indices: MatchIndices = []
        for b, chunk in enumerate(cost.split(sizes, dim=-1)):
            if sizes[b] == 0:
                indices.append((empty.clone(), empty.clone()))
                continue
            rows, cols = linear_sum_assignment(chunk[b].numpy())
            indices.append(
                (
                    torch.as_tensor(np.asarray(rows), dtype=torch.int64),
                    torch.as_tensor(np.asarray(cols), dtype=torch.int64),
                )
            )
        return indices

    def extra_repr(self) -> str:
        return f"cost_score={self.cost_score}, cost_l1={self.cost_l1}, cost_giou={self.cost_giou}"


__all__ = ["HungarianMatcher", "MatchIndices"]
