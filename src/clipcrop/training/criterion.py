"""Training losses of ClipCrop's decoder (paper 3.3, following Jia et al. and DETR).

Per image the decoder predicts ``M`` crops and a quality logit for each. The targets are *all*
valid annotated GAIC crops of that image with their mean opinion scores (MOS):

1. The *positive* crops (MOS >= 4, the paper's "high-quality ground-truth boxes") are matched
   one-to-one to predictions by :class:`~clipcrop.training.matcher.HungarianMatcher`.
2. Matched predictions get box losses: L1 on normalised ``cxcywh`` and ``1 - GIoU`` on ``xyxy``,
   each summed over matched pairs and divided by their number (at least 1, so an image batch
   without positives gives 0 rather than NaN).
3. Every prediction gets a score loss (binary cross-entropy with logits, averaged over all
   ``B * M`` predictions). Its target is 1 for matched predictions; for an unmatched prediction
   that overlaps some annotated crop with IoU >= ``redundancy_iou`` (0.9) it is the normalised
   MOS of the annotated crop with the highest IoU: *local redundancy* label smoothing, since
   people barely perceive such small changes of a crop, so a near-duplicate of a good crop should
   not be pushed to score 0; otherwise the target is 0.

Box formats: ``"boxes"`` targets and ``"pred_boxes"`` are ``cxcywh`` normalised to the (mosaic)
image's width and height, in ``[0, 1]``.

Targets, one dict per image (build them with :func:`build_target`):

* ``"boxes"``: (K, 4) float, normalised cxcywh, every valid annotated crop (K may be 0);
* ``"quality"``: (K,) float in [0, 1], normalised MOS (:func:`normalise_mos`);
* ``"positive"``: (K,) bool, which crops the matcher may use (:func:`positives_from_mos`);
* optionally ``"labels"``: (K,) int64, only with ``"pred_class_logits"`` outputs (see the matcher).
"""

from __future__ import annotations

import re
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..ops.box_ops import box_cxcywh_to_xyxy, box_iou, box_xyxy_to_cxcywh, generalized_box_iou
from .matcher import HungarianMatcher, MatchIndices

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

#: GAIC's MOS scale.
GAIC_MOS_MIN = 1.0
GAIC_MOS_MAX = 5.0
#: The paper's "high-quality" threshold on GAIC's MOS.
GAIC_POSITIVE_MOS = 4.0

DEFAULT_WEIGHTS: dict[str, float] = {"loss_score": 1.0, "loss_l1": 5.0, "loss_giou": 2.0}

_AUX_SUFFIX = re.compile(r"^(?P<base>.+)_(?P<layer>\d+)$")


def normalise_mos(mos: ArrayT, low: float = GAIC_MOS_MIN, high: float = GAIC_MOS_MAX) -> ArrayT:
    """Map MOS linearly from ``[low, high]`` to ``[0, 1]``, clipped (GAIC: ``(mos - 1) / 4``).

    Accepts and returns a numpy array or a torch tensor (float), shape unchanged. This is the
    score target for redundancy-smoothed predictions, which must be a probability for BCE.
    """
    if high <= low:
        raise ValueError(f"MOS range must have high > low, got [{low}, {high}]")
    if isinstance(mos, torch.Tensor):
        return ((mos.float() - low) / (high - low)).clamp(0.0, 1.0)
    return np.clip((np.asarray(mos, dtype=np.float64) - low) / (high - low), 0.0, 1.0)


def positives_from_mos(mos: ArrayT, threshold: float = GAIC_POSITIVE_MOS) -> ArrayT:
    """(K,) MOS -> (K,) bool: the crops the matcher may match to predictions.

    ``mos >= threshold``; if no crop reaches it (and K > 0), the crops tied at the image's best
    MOS instead, so every image with annotations teaches the boxes something. Numpy in, numpy
    out; tensor in, tensor out.
    """
    if isinstance(mos, torch.Tensor):
        positive = mos >= threshold
        if mos.numel() > 0 and not bool(positive.any()):
            positive = mos == mos.max()
        return positive
    arr = np.asarray(mos)
    positive = arr >= threshold
    if arr.size > 0 and not positive.any():
        positive = arr == arr.max()
    return positive


def build_target(
    boxes_xyxy_norm: np.ndarray | torch.Tensor,
    mos: np.ndarray | torch.Tensor,
    threshold: float = GAIC_POSITIVE_MOS,
    mos_range: tuple[float, float] = (GAIC_MOS_MIN, GAIC_MOS_MAX),
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Target dict for :class:`SetCriterion` from (K, 4) normalised xyxy crops and (K,) MOS.

    Returns ``{"boxes": (K, 4) float32 normalised cxcywh, "quality": (K,) float32 in [0, 1],
    "positive": (K,) bool}``. Takes xyxy because datasets and mosaics work in xyxy; converts to
    cxcywh because that is what the decoder predicts.
    """
    boxes = torch.as_tensor(np.asarray(boxes_xyxy_norm, dtype=np.float32).reshape(-1, 4), device=device)
    mos_t = torch.as_tensor(np.asarray(mos, dtype=np.float32).reshape(-1), device=device)
    if boxes.shape[0] != mos_t.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {mos_t.shape[0]} MOS values")
    return {
        "boxes": box_xyxy_to_cxcywh(boxes),
        "quality": normalise_mos(mos_t, *mos_range),
        "positive": positives_from_mos(mos_t, threshold),
    }


class SetCriterion(nn.Module):
    """ClipCrop's set loss: Hungarian matching to positives, box losses, smoothed score BCE.

    Args:
        matcher: the :class:`HungarianMatcher` (no parameters; its costs should mirror ``weight_dict``).
        weight_dict: weight of each base loss name for :meth:`total`; aux-layer terms
            (``loss_l1_0`` ...) get the weight of their base name. Default
            ``{"loss_score": 1, "loss_l1": 5, "loss_giou": 2}``.
        redundancy_iou: IoU from which an unmatched prediction inherits the normalised MOS of
            its best-overlapping annotated crop as score target (paper: 0.9). ``> 1`` disables it.
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float] | None = None,
        redundancy_iou: float = 0.9,
    ) -> None:
        super().__init__()
        self.matcher = matcher
        self.weight_dict = dict(DEFAULT_WEIGHTS if weight_dict is None else weight_dict)
        self.redundancy_iou = float(redundancy_iou)

    # ------------------------------------------------------------------ matching

    def match(self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> MatchIndices:
        """Match predictions to each image's *positive* crops.

        Returns B pairs ``(pred_idx, tgt_idx)`` of int64 tensors on ``pred_boxes``' device,
        where ``tgt_idx`` indexes *all* of the image's crops (``targets[b]["boxes"]``), not
        just the positives, so callers can read ``quality`` etc. directly.
        """
        device = outputs["pred_boxes"].device
        pos_targets = []
        pos_index = []
        for t in targets:
            positive = t["positive"].to(dtype=torch.bool)
            idx = torch.nonzero(positive, as_tuple=False).flatten()
            pos_index.append(idx.cpu())
            sub = {"boxes": t["boxes"][positive]}
            if "labels" in t:
                sub["labels"] = t["labels"][positive]
            pos_targets.append(sub)
        indices = self.matcher(outputs, pos_targets)
        return [
            (src.to(device), pos_index[b][tgt].to(device=device, dtype=torch.int64))
            for b, (src, tgt) in enumerate(indices)
        ]

    # ------------------------------------------------------------------ targets

    @torch.no_grad()
    def score_targets(
        self, pred_boxes: torch.Tensor, targets: list[dict[str, torch.Tensor]], indices: MatchIndices
    ) -> torch.Tensor:
        """(B, M, 4) normalised cxcywh predictions -> (B, M) float score targets in [0, 1].

        1 for matched predictions; for the others, the ``"quality"`` of the annotated crop with
        the highest IoU if that IoU >= ``redundancy_iou``, else 0. ``indices`` as from
        :meth:`match` (target indices into all crops). Not differentiated: the targets are labels.
        """
        batch, num_queries = pred_boxes.shape[:2]
        out = torch.zeros(batch, num_queries, dtype=torch.float32, device=pred_boxes.device)
        for b, t in enumerate(targets):
            boxes = t["boxes"]
            if boxes.shape[0] > 0 and self.redundancy_iou <= 1.0:
                iou, _ = box_iou(
                    box_cxcywh_to_xyxy(pred_boxes[b].float()),
                    box_cxcywh_to_xyxy(boxes.to(pred_boxes.device).float()),
                )  # (M, K)
                best_iou, best = iou.max(dim=1)
                quality = t["quality"].to(device=pred_boxes.device, dtype=torch.float32)
                out[b] = torch.where(best_iou >= self.redundancy_iou, quality[best], out[b])
            src = indices[b][0].to(pred_boxes.device)
            out[b, src] = 1.0
        return out

    # ------------------------------------------------------------------ losses

    def _losses(
        self, outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]], suffix: str
    ) -> dict[str, torch.Tensor]:
        pred_boxes = outputs["pred_boxes"]
        logits = outputs["pred_logits"].reshape(pred_boxes.shape[:2])
        indices = self.match(outputs, targets)

        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        matched = pred_boxes[batch_idx, src_idx]  # (N, 4)
        tgt = torch.cat(
            [t["boxes"][tgt_i.to(t["boxes"].device)] for t, (_, tgt_i) in zip(targets, indices, strict=True)]
        )
        tgt = tgt.to(matched)
        num_matched = max(int(src_idx.numel()), 1)

        loss_l1 = F.l1_loss(matched, tgt, reduction="none").sum() / num_matched
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(matched), box_cxcywh_to_xyxy(tgt)))
        # With nothing matched both sums are over empty tensors: exactly 0, still in the graph.
        loss_giou = (1 - giou).sum() / num_matched

        score_tgt = self.score_targets(pred_boxes.detach(), targets, indices).to(logits.dtype)
        if logits.numel() > 0:
            loss_score = F.binary_cross_entropy_with_logits(logits, score_tgt, reduction="mean")
        else:
            loss_score = logits.sum() * 0.0
        return {
            f"loss_score{suffix}": loss_score,
            f"loss_l1{suffix}": loss_l1,
            f"loss_giou{suffix}": loss_giou,
        }

    def forward(
        self, outputs: dict[str, object], targets: list[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """Compute every loss term.

        Args:
            outputs: ``"pred_boxes"`` (B, M, 4) normalised cxcywh, ``"pred_logits"`` (B, M) raw
                score logits, optionally ``"pred_class_logits"`` (B, M, C) (used by the matcher
                only) and ``"aux_outputs"``: a list of dicts with the same keys, one per earlier
                decoder layer (deep supervision; each is matched on its own, as in DETR).
            targets: B dicts, see the module docstring.

        Returns:
            ``{"loss_score", "loss_l1", "loss_giou"}`` scalar tensors for the last layer, plus
            ``"loss_score_{i}"``, ``"loss_l1_{i}"``, ``"loss_giou_{i}"`` for ``aux_outputs[i]``.
            Unweighted; combine them with :meth:`total`.
        """
        main = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        losses = self._losses(main, targets, suffix="")  # type: ignore[arg-type]
        for i, aux in enumerate(outputs.get("aux_outputs", None) or []):  # type: ignore[union-attr]
            losses.update(self._losses(aux, targets, suffix=f"_{i}"))
        return losses

    def weight_of(self, name: str) -> float | None:
        """Weight of a loss term by name: exact key, else its base name without ``_{layer}``."""
        if name in self.weight_dict:
            return float(self.weight_dict[name])
        m = _AUX_SUFFIX.match(name)
        if m and m.group("base") in self.weight_dict:
            return float(self.weight_dict[m.group("base")])
        return None

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the terms in ``losses`` that have a weight (others are logged only)."""
        terms = [v * w for k, v in losses.items() if (w := self.weight_of(k)) is not None]
        if not terms:
            raise ValueError(f"no loss term has a weight: {sorted(losses)} vs {sorted(self.weight_dict)}")
        return sum(terms[1:], terms[0])

    def extra_repr(self) -> str:
        return f"weight_dict={self.weight_dict}, redundancy_iou={self.redundancy_iou}"


__all__ = [
    "SetCriterion",
    "build_target",
    "normalise_mos",
    "positives_from_mos",
    "DEFAULT_WEIGHTS",
    "GAIC_MOS_MIN",
    "GAIC_MOS_MAX",
    "GAIC_POSITIVE_MOS",
]
