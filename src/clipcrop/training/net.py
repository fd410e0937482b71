"""What trains in a decoder run: token selection plus the decoder as one module (:class:`TrainNet`).

Data parallelism (Accelerate's DDP wrapper) wraps everything that has gradients, so selection
and decoding live in one ``nn.Module``; with backbone fine-tuning the backbone's image side is a
submodule too. The condition of a sample (:class:`ConditionSpec`: text embeddings, and in a
mosaic the target tile's best crop) selects image tokens (:func:`clipcrop.modeling.selection.select_tokens`;
in mosaics only tokens near that crop, :func:`clipcrop.data.mosaic.filter_initial_boxes`), and
the decoder predicts crops relative to their union ``b_u``.

Box formats: ``best_crop`` is normalised xyxy in the mosaic; the outputs are the decoder's
``pred_boxes`` (B, M, 4) normalised cxcywh.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.mosaic import filter_initial_boxes
from ..errors import ParameterError
from ..modeling.backbone import Backbone, ImageFeatures
from ..modeling.model import ClipCropModel
from ..modeling.selection import Selection, decoder_inputs, select_tokens, unconditioned
from .config import TrainConfig


@dataclass
class ConditionSpec:
    """The condition of one sample: text embeddings (W, Dq) and labels, or none; ``best_crop``
    (4,) normalised mosaic xyxy restricts selectable tokens (mosaics) when given."""

    embeds: torch.Tensor | None
    labels: list[str]
    best_crop: torch.Tensor | None = None


class TrainNet(nn.Module):
    """Selection plus decoder as one module (so data parallelism wraps everything that trains).

    With ``finetune=True`` the backbone's image side is a submodule and images are encoded inside
    :meth:`forward` with gradients; otherwise features come in precomputed.
    """

    def __init__(
        self, model: ClipCropModel, backbone: Backbone, *, finetune: bool = False, config: TrainConfig
    ) -> None:
        super().__init__()
        self.model = model
        self.finetune = finetune
        if finetune:
            self.backbone_model = backbone.model
        self._backbone = backbone
        self._config = config

    def forward(
        self,
        features: list[ImageFeatures] | None,
        conditions: list[ConditionSpec],
        pixel_values: torch.Tensor | None = None,
        image_sizes: list[tuple[int, int]] | None = None,
    ) -> tuple[dict, list[Selection]]:
        """Decode crops for a batch.

        Args:
            features: B per-image features (B = 1 each), or None with ``pixel_values``.
            conditions: B conditions.
            pixel_values: (B, 3, S, S) images to encode with gradients (fine-tuning).
            image_sizes: B (width, height), for OWLv2's padding.

        Returns:
            The decoder's outputs (``pred_boxes`` (B, M, 4) cxcywh normalised, ``pred_logits``
            (B, M), ``aux_outputs``) and the B selections.
        """
        if features is None:
            if pixel_values is None:
                raise ParameterError("TrainNet needs features or pixel_values")
            batch = self._backbone.encode_with_grad(pixel_values, image_sizes)
            features = [batch[i] for i in range(pixel_values.shape[0])]
        cfg = self._config
        selections = []
        for feats, cond in zip(features, conditions, strict=True):
            if cond.embeds is None:
                selections.append(unconditioned(feats))
                continue
            mask = None
            if cond.best_crop is not None:
                mask = filter_initial_boxes(
                    feats.boxes[0].detach(),
                    cond.best_crop,
                    max_center_dist=cfg.filter_center_dist,
                    min_area_frac=cfg.filter_min_area,
                    ensure_one=True,
                )
            selections.append(
                select_tokens(feats, cond.embeds, cond.labels, min_score=cfg.min_score, token_mask=mask)
            )
        tokens = torch.cat([f.tokens for f in features])
        token_boxes = torch.cat([f.boxes for f in features])
        inputs = decoder_inputs(selections, tokens, token_boxes)  # as the predictor feeds the decoder
        return self.model(
            tokens, token_boxes, inputs.condition, inputs.has_condition, inputs.union
        ), selections


def float_outputs(outputs: dict, aux: bool) -> dict:
    """The decoder's outputs in fp32 (mixed precision computes them in half), for the criterion;
    the auxiliary layers' only when ``aux``."""
    out = {"pred_boxes": outputs["pred_boxes"].float(), "pred_logits": outputs["pred_logits"].float()}
    if aux:
        out["aux_outputs"] = [
            {"pred_boxes": a["pred_boxes"].float(), "pred_logits": a["pred_logits"].float()}
            for a in outputs.get("aux_outputs", [])
        ]
    return out


__all__ = ["ConditionSpec", "TrainNet", "float_outputs"]
