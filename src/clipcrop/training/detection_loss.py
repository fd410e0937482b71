"""OWL-ViT's detection loss, what backbone fine-tuning minimises (beside :mod:`.criterion`, the crop loss).

Per image, each object is paired with one image token by
:class:`clipcrop.training.matcher.HungarianMatcher` (class probability + L1 + GIoU costs, the crop
decoder's matcher fed ``"pred_class_logits"`` and ``"labels"``). Terms (:class:`DetectionLoss`,
named, with a weight dict): ``loss_focal``, sigmoid focal loss over every token x query logit,
1 for a matched token and each query of its object's class, 0 elsewhere; ``loss_l1`` and
``loss_giou`` on the matched tokens' boxes (normalised cxcywh / xyxy). Each is summed and divided
by the number of objects.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, generalized_box_iou
from .matcher import HungarianMatcher


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float
) -> torch.Tensor:
    """Element-wise focal loss (Lin et al.) of raw logits against {0, 1} targets, same shape."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


class DetectionLoss(nn.Module):
    """OWL-ViT's detection loss: Hungarian matching, focal loss on logits, L1 + GIoU on boxes.

    Args:
        matcher: :class:`~clipcrop.training.matcher.HungarianMatcher` (class-aware through
            ``"pred_class_logits"``).
        weight_dict: ``{"loss_focal", "loss_l1", "loss_giou"}`` weights for :meth:`total`.
        alpha, gamma: focal-loss settings.
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        alpha: float = 0.25,
        gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.alpha = alpha
        self.gamma = gamma

    def forward(
        self, logits: torch.Tensor, boxes_xyxy: torch.Tensor, targets: list[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """Loss terms of a batch.

        Args:
            logits: (B, N, C) token x query logits.
            boxes_xyxy: (B, N, 4) token boxes, normalised xyxy.
            targets: B dicts: ``"boxes"`` (K, 4) normalised cxcywh, ``"labels"`` (K,) int64 query
                column of each object's own text (for the matcher), ``"classes"`` (K, C) bool: the
                columns naming each object's class (its text and synonyms).

        Returns:
            ``{"loss_focal", "loss_l1", "loss_giou"}`` unweighted scalars, plus ``"num_objects"``.
        """
        pred_boxes = box_xyxy_to_cxcywh(boxes_xyxy)
        indices = self.matcher({"pred_boxes": pred_boxes, "pred_class_logits": logits}, targets)
        cls_target = torch.zeros_like(logits)
        matched, target_boxes = [], []
        for b, (src, tgt) in enumerate(indices):
            if len(src) == 0:
                continue
            src, tgt = src.to(logits.device), tgt.to(logits.device)
            cls_target[b, src] = targets[b]["classes"][tgt].to(logits.dtype)
            matched.append(pred_boxes[b, src])
            target_boxes.append(targets[b]["boxes"][tgt].to(pred_boxes))
        num = max(sum(int(t["boxes"].shape[0]) for t in targets), 1)
        loss_focal = sigmoid_focal_loss(logits, cls_target, self.alpha, self.gamma).sum() / num
        if matched:
            pred, tgt_b = torch.cat(matched), torch.cat(target_boxes)
            loss_l1 = F.l1_loss(pred, tgt_b, reduction="sum") / num
            giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(tgt_b)))
            loss_giou = (1 - giou).sum() / num
        else:  # no objects in the batch: box terms are 0 but stay in the graph
            loss_l1 = loss_giou = pred_boxes.sum() * 0.0
        return {
            "loss_focal": loss_focal,
            "loss_l1": loss_l1,
            "loss_giou": loss_giou,
            "num_objects": torch.tensor(float(num)),
        }

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the weighted terms."""
        return sum(self.weight_dict[k] * losses[k] for k in self.weight_dict)


__all__ = ["DetectionLoss", "sigmoid_focal_loss"]
