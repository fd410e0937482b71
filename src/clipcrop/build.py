"""The builders: a ClipCrop model, its training criterion and the fine-tuning detection loss.

One place assembles each trainable piece, so that training (:mod:`clipcrop.training.trainer`),
backbone fine-tuning (:mod:`clipcrop.training.finetune`) and the random checkpoints of tests and
benchmarks (:func:`build_random_checkpoint`) build the same thing from the
same settings, in the spirit of Segment Anything's ``build_sam`` registry and DETR's ``build()``:

* :func:`build_model`: a :class:`~clipcrop.modeling.model.ClipCropModel` from a backbone name, a
  decoder configuration (a :class:`~clipcrop.modeling.decoder_config.DecoderConfig`, a dict of
  sizes over the defaults, or a name from :data:`DECODER_CONFIGS`) and the selection settings;
* :func:`build_criterion`: the decoder's set loss (:class:`~clipcrop.training.criterion.SetCriterion`
  with its :class:`~clipcrop.training.matcher.HungarianMatcher`), matching costs equal to the loss
  weights so that matching minimises what the loss measures;
* :func:`build_detection_loss`: OWL-ViT's detection loss for backbone fine-tuning, likewise.

Boxes are not handled here; the pieces built state their formats (the decoder emits normalised
cxcywh crops, see :mod:`clipcrop.modeling.decoder`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ParameterError
from .modeling.decoder_config import DecoderConfig
from .modeling.model import ClipCropModel
from .modeling.selection_settings import check_selection
from .training.criterion import SetCriterion
from .training.matcher import HungarianMatcher

if TYPE_CHECKING:
    from .training.detection_loss import DetectionLoss

#: named decoder configurations. ``default`` is the shipped model's decoder (:class:`DecoderConfig`'s
#: defaults); ``tiny`` is the decoder of the tiny random test checkpoints (32-wide tokens, 12
#: crops), small enough to build and run in milliseconds on a CPU
DECODER_CONFIGS: dict[str, DecoderConfig] = {
    "default": DecoderConfig(),
    "tiny": DecoderConfig(
        input_dim=32, d_model=32, num_queries=12, num_layers=2, num_heads=4, ffn_dim=64, dropout=0.0
    ),
}


class CriterionSettings(Protocol):
    """What :func:`build_criterion` reads (a :class:`~clipcrop.training.config.TrainConfig` has it)."""

    weight_score: float
    weight_l1: float
    weight_giou: float
    redundancy_iou: float


class DetectionLossSettings(Protocol):
    """What :func:`build_detection_loss` reads (a ``FinetuneConfig`` has it)."""

    weight_focal: float
    weight_l1: float
    weight_giou: float
    focal_alpha: float
    focal_gamma: float


def decoder_config(
    decoder: DecoderConfig | Mapping[str, Any] | str | None = None, *, input_dim: int | None = None
) -> DecoderConfig:
    """The decoder configuration ``decoder`` stands for.

    Args:
        decoder: a :class:`DecoderConfig`; a name from :data:`DECODER_CONFIGS`; a dict of sizes
            over the defaults (unknown keys are an error, unlike a checkpoint's config, which may
            come from another version); None: the defaults.
        input_dim: the backbone's token width, which wins over the configuration's (a decoder
            always reads the tokens of the backbone it is built for).

    Raises:
        ParameterError: an unknown name or size.
    """
    if decoder is None:
        config = DecoderConfig()
    elif isinstance(decoder, DecoderConfig):
        config = decoder
    elif isinstance(decoder, str):
        if decoder not in DECODER_CONFIGS:
            raise ParameterError(
                f"unknown decoder configuration {decoder!r}; known: {', '.join(DECODER_CONFIGS)}"
            )
        config = DECODER_CONFIGS[decoder]
    else:
        unknown = set(decoder) - set(DecoderConfig.__dataclass_fields__)
        if unknown:
            raise ParameterError(
                f"unknown decoder settings: {', '.join(sorted(unknown))} "
                f"(known: {', '.join(DecoderConfig.__dataclass_fields__)})"
            )
        config = DecoderConfig(**decoder)
    return config if input_dim is None else dataclasses.replace(config, input_dim=int(input_dim))


def build_model(
    backbone: str,
    decoder: DecoderConfig | Mapping[str, Any] | str | None = None,
    selection: Mapping[str, Any] | None = None,
    *,
    input_dim: int | None = None,
    **extra: Any,
) -> ClipCropModel:
    """A new (randomly initialised) ClipCrop model: the crop decoder and its checkpoint config.

    Args:
        backbone: how the checkpoint names its OWL-ViT/OWLv2 backbone (Hub id, folder, or a path
            relative to the checkpoint: :func:`clipcrop.modeling.model.portable_backbone_ref`).
        decoder, input_dim: see :func:`decoder_config`.
        selection: token-selection settings over
            :data:`clipcrop.modeling.model.DEFAULT_SELECTION` (unknown keys are an error).
        extra: further entries of the checkpoint's ``config.json`` (``training``: what the run
            was, shown on the model card).

    Raises:
        ParameterError: an unknown decoder name, size or selection setting.
    """
    config = decoder_config(decoder, input_dim=input_dim)
    return ClipCropModel(
        backbone=backbone, decoder=config.to_dict(), selection=check_selection(selection), **extra
    )


def build_criterion(settings: CriterionSettings | None = None) -> SetCriterion:
    """The decoder's training loss: Hungarian matching to positive crops, L1 + GIoU on boxes and
    the smoothed score BCE, every term weighted as ``settings`` say (matching costs alike).

    Args:
        settings: loss weights and ``redundancy_iou``; None: the defaults (1, 5, 2 and 0.9).
    """
    if settings is None:
        return SetCriterion(HungarianMatcher())
    return SetCriterion(
        HungarianMatcher(settings.weight_score, settings.weight_l1, settings.weight_giou),
        {
            "loss_score": settings.weight_score,
            "loss_l1": settings.weight_l1,
            "loss_giou": settings.weight_giou,
        },
        redundancy_iou=settings.redundancy_iou,
    )


def build_detection_loss(settings: DetectionLossSettings) -> DetectionLoss:
    """Backbone fine-tuning's loss: Hungarian matching of tokens to objects (class-aware), focal
    loss on the token x query logits, L1 + GIoU on the matched boxes, weighted as ``settings``
    say (matching costs alike)."""
    from .training.detection_loss import DetectionLoss

    return DetectionLoss(
        HungarianMatcher(settings.weight_focal, settings.weight_l1, settings.weight_giou),
        {
            "loss_focal": settings.weight_focal,
            "loss_l1": settings.weight_l1,
            "loss_giou": settings.weight_giou,
        },
        alpha=settings.focal_alpha,
        gamma=settings.focal_gamma,
    )


def build_random_checkpoint(
    out_dir: str | os.PathLike,
    backbone_dir: str | os.PathLike,
    decoder: DecoderConfig | Mapping[str, Any] | str | None = None,
    *,
    seed: int = 0,
) -> Path:
    """Write a trained-mode ClipCrop checkpoint whose decoder is randomly initialised (seeded), on
    the local OWL-ViT/OWLv2 folder ``backbone_dir`` (named by its absolute path): for speed work and
    tests, whose timings and code paths do not depend on trained weights.

    Args:
        decoder: as :func:`build_model`; its input width is set to the backbone's.
    """
    import torch

    backbone = Path(backbone_dir).resolve()
    hidden = json.loads((backbone / "config.json").read_text(encoding="utf-8"))["vision_config"][
        "hidden_size"
    ]
    torch.manual_seed(seed)
    model = build_model(str(backbone), decoder, input_dim=hidden)
    model.save_pretrained(out_dir)
    return Path(out_dir)


__all__ = [
    "DECODER_CONFIGS",
    "build_criterion",
    "build_detection_loss",
    "build_model",
    "build_random_checkpoint",
    "decoder_config",
]
