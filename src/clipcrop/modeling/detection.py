"""OWL-ViT's raw detections: the open-vocabulary view that ClipCrop's crops are built on.

Every image token of OWL-ViT predicts one box and, for a query, one logit; transformers'
``post_process_grounded_object_detection`` turns them into scored boxes. :func:`rank_detections`
does the same ranking on :class:`~clipcrop.modeling.backbone.ImageFeatures` that are already computed,
so detections cost no second backbone pass and equal transformers' outputs (tested).

Boxes here are **float pixels** (x0, y0, x1, y1) of the upright image, clamped to it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .backbone import ImageFeatures


@dataclass(frozen=True)
class Detection:
    """One detection: ``box`` float pixels xyxy, ``score`` = sigmoid(``logit``), ``token`` index."""

    box: tuple[float, float, float, float]
    score: float
    logit: float
    token: int

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 3) for v in self.box],
            "score": round(float(self.score), 6),
            "logit": round(float(self.logit), 6),
            "token": int(self.token),
        }


@dataclass
class DetectionResult(Sequence[Detection]):
    """Detections of one image for one query, best first; indexable like a list.

    Attributes:
        detections: best first.
        width, height: the upright image's size in pixels.
        query: the text query (normalised) or None.
        image_query: name of the query image, or None.
        image: display name of the image.
        truncated: the text had more tokens than OWL-ViT reads; the rest was not seen.
        query_token: for an image query, the query image's token whose embedding was used.
    """

    detections: list[Detection]
    width: int
    height: int
    query: str | None
    image_query: str | None
    image: str
    truncated: bool = False
    query_token: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, index):  # type: ignore[override]
        return self.detections[index]

    def __len__(self) -> int:
        return len(self.detections)

    def __iter__(self) -> Iterator[Detection]:
        return iter(self.detections)

    def to_dict(self) -> dict:
        """The ``detect`` command's JSON object (also ``POST /v1/detect``)."""
        out = {
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "query": self.query,
            "detections": [d.to_dict() for d in self.detections],
            "error": None,
        }
        if self.image_query is not None:
            out["image_query"] = self.image_query
            out["query_token"] = self.query_token
        if self.query is not None:
            out["truncated"] = self.truncated
        return out


def rank_detections(
    features: ImageFeatures, query_embed: torch.Tensor, width: int, height: int, top_k: int
) -> list[Detection]:
    """The ``top_k`` tokens with the highest OWL-ViT logit for one query, best first.

    Args:
        features: one image's features (B = 1).
        query_embed: (Dq,) text or image-query embedding (any norm: OWL-ViT normalises it).
        width, height: the upright image in pixels (boxes are scaled to it).
        top_k: how many detections (fewer when the image has fewer tokens).
    """
    logits = features.logits(query_embed[None].to(features.class_embeds.device))[0, :, 0].float()
    k = min(int(top_k), logits.shape[0])
    best = torch.topk(logits, k).indices.cpu()
    scale = torch.tensor([width, height, width, height], dtype=torch.float64)
    boxes = features.boxes[0].double().cpu()[best] * scale
    values = logits.cpu()[best]
    return [
        Detection(
            box=tuple(float(v) for v in box),  # type: ignore[arg-type]
            score=float(torch.sigmoid(logit)),
            logit=float(logit),
            token=int(token),
        )
        for box, logit, token in zip(boxes, values, best, strict=True)
    ]
