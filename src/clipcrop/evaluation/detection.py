"""How well a backbone detects: the top-1 box IoU of each object's text (fine-tuning's evaluation).

Boxes: :class:`~clipcrop.data.detection.DetectionSample` boxes normalised xyxy against the
backbone's token boxes (normalised xyxy of the upright image).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.detection import DetectionSample
from ..errors import DatasetError
from ..io.images import load_image
from ..limits import Limits
from ..modeling.backbone import Backbone
from ..ops.box_ops import box_iou


@torch.no_grad()
def top1_box_iou(
    backbone: Backbone, samples: Sequence[DetectionSample], limits: Limits | None = None
) -> dict:
    """How well a backbone finds each object from its text: per object, the IoU of the box of the
    token with the highest logit for the object's text with the object's box.

    Returns ``{"iou_mean", "hit_rate" (IoU >= 0.5), "num_objects"}``.
    """
    limits = limits or Limits()
    ious = []
    for s in samples:
        if not len(s.texts):
            continue
        img = load_image(s.image_path, limits).image
        feats = backbone.encode(backbone.preprocess([img]), [(img.width, img.height)])
        logits = feats.logits(backbone.embed_texts(list(s.texts)).to(backbone.device))[0]  # (N, K)
        best = logits.argmax(dim=0)
        pred = feats.boxes[0, best].float().cpu()
        truth = torch.as_tensor(s.boxes_xyxy_norm, dtype=torch.float32)
        ious.append(torch.diag(box_iou(pred, truth)[0]))
    if not ious:
        raise DatasetError("no objects to score")
    all_ious = torch.cat(ious)
    return {
        "iou_mean": float(all_ious.mean()),
        "hit_rate": float((all_ious >= 0.5).float().mean()),
        "num_objects": int(all_ious.numel()),
    }


__all__ = ["top1_box_iou"]
