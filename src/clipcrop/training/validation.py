"""Validation during training (paper 4.4 and 4.2-4.3 metrics) and the best checkpoint.

At the end of every epoch (and of the run) the trainer scores the model being trained with the
very predictor users get (:class:`clipcrop.predictor.ClipCrop`: selection, decoding, NMS and
post-processing included), through :func:`clipcrop.evaluation.harness.evaluate_samples`:

* on GAIC's validation split (``val_split``, 200 images in the journal version): Acc1/5, Acc1/10,
  the IoU accuracies and ``iou_top1_best``, each image's caption as its query (none for the
  ``base`` variant);
* on a TextCrop-format set (``val_text``, e.g. a held-out part of TextCrop), when one is given:
  IoU-Mean and IoU-Max, as ``text_iou_mean`` and ``text_iou_max``.

:class:`BestTracker` keeps the best value of one metric (``best_metric``; higher is better for
every one of them) and whether the latest validation improved it; the trainer then writes
``out_dir/best/`` with ``best.json`` (step, metric, value, all metrics). Validation draws no random
numbers the training sees: the trainer saves and restores every RNG around it, so a run with
validation trains the same weights as one without.

Boxes: the harness compares pixel ``x0, y0, x1, y1`` boxes of the upright image.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.datasets import GaicSample, TextCropSample, load_gaic, load_textcrop
from ..errors import DatasetError, ParameterError

logger = logging.getLogger(__name__)

#: GAIC metrics (:class:`clipcrop.evaluation.metrics.GaicAccumulator` plus ``iou_top1_best``)
GAIC_METRICS = (
    "acc1_5",
    "acc1_10",
    "acc_iou85_top5",
    "acc_iou85_top10",
    "acc_iou90_top5",
    "acc_iou90_top10",
    "iou_top1_best",
)
#: TextCrop-format metrics, prefixed so they never collide with GAIC's
TEXT_METRICS = ("text_iou_mean", "text_iou_max")
BEST_METRICS = GAIC_METRICS + TEXT_METRICS
BEST_FILE = "best.json"
#: validation images drawn with their top crops for TensorBoard
PREVIEWS = 4
PREVIEW_SIDE = 384


def default_best_metric(val_text: str | None) -> str:
    """IoU-Mean on the text set when there is one (the paper's main figure), else Acc1/5."""
    return "text_iou_mean" if val_text else "acc1_5"


def check_validation_settings(best_metric: str | None, val_text: str | None, val_limit: int | None) -> None:
    """Raise :class:`ParameterError` for validation settings that cannot work."""
    if best_metric is not None and best_metric not in BEST_METRICS:
        raise ParameterError(f"best_metric {best_metric!r} is not one of {', '.join(BEST_METRICS)}")
    if best_metric in TEXT_METRICS and not val_text:
        raise ParameterError(f"best_metric {best_metric!r} needs a validation text set (val_text)")
    if val_limit is not None and (isinstance(val_limit, bool) or val_limit < 1):
        raise ParameterError(f"val_limit must be a positive whole number, got {val_limit!r}")


@dataclass
class ValidationData:
    """What a run validates on (either list may be empty, not both)."""

    gaic: list[GaicSample] = field(default_factory=list)
    text: list[TextCropSample] = field(default_factory=list)


def load_validation_data(
    gaic_root: str | None,
    split: str | None,
    text_annotations: str | None,
    uses_text: bool,
    val_text: str | None,
    limit: int | None = None,
) -> ValidationData | None:
    """The validation samples of a run, or None when there is nothing to validate on.

    A missing GAIC split folder only logs a warning (a GAIC copy without ``val/`` still trains);
    a given text set must load.

    Raises:
        DatasetError: a malformed validation split or text set.
    """
    data = ValidationData()
    if gaic_root is not None and split:
        if (Path(gaic_root) / "images" / split).is_dir():
            captions = text_annotations if uses_text else None
            data.gaic = load_gaic(gaic_root, split, text_annotations_dir=captions, require_captions=uses_text)
        else:
            logger.warning("no validation: GAIC split %r not found under %s", split, gaic_root)
    if val_text:
        path = Path(val_text)
        data.text = load_textcrop(path.parent, path) if path.is_file() else load_textcrop(path)
    if limit is not None:
        data.gaic, data.text = data.gaic[:limit], data.text[:limit]
    if not data.gaic and not data.text:
        return None
    return data


class _CachingPredictor:
    """A :class:`~clipcrop.predictor.ClipCrop` that keeps each image's encoding when the backbone
    is frozen (it cannot change between epochs), so later validations only decode."""

    def __init__(self, predictor: Any, *, cache: bool) -> None:
        self._predictor = predictor
        self._encoded: dict[str, Any] | None = {} if cache else None

    def encode(self, image: Any, *, name: str | None = None) -> Any:
        if self._encoded is None or not isinstance(image, str | Path):
            return self._predictor.encode(image, name=name)
        key = str(image)
        if key not in self._encoded:
            self._encoded[key] = self._predictor.encode(image, name=name)
        return self._encoded[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictor, name)


@dataclass
class ValidationResult:
    """One validation: ``metrics`` (fractions in [0, 1]; ``num_samples`` / ``text_num_samples``),
    ``previews`` (the first images with their top crops drawn) and the time it took."""

    metrics: dict[str, float]
    previews: list[Any]
    elapsed_s: float


class Validator:
    """Scores a model in training on :class:`ValidationData` with the users' predictor.

    Args:
        data: the samples.
        model: the :class:`~clipcrop.modeling.model.ClipCropModel` being trained (the same
            object every epoch; switched to eval mode for the validation and back).
        backbone: its backbone; ``frozen``: its encodings are kept between validations.
    """

    def __init__(self, data: ValidationData, model: Any, backbone: Any, *, frozen: bool) -> None:
        from ..predictor import ClipCrop

        was_training = model.training
        self.data = data
        self.model = model
        self.backbone = backbone
        self.predictor = _CachingPredictor(ClipCrop(backbone, model), cache=frozen)
        model.train(was_training)  # the predictor switched it to eval mode

    @property
    def size(self) -> int:
        """Samples one validation scores."""
        return len(self.data.gaic) + len(self.data.text)

    def __call__(self) -> ValidationResult:
        from ..evaluation.harness import evaluate_samples

        t0 = time.perf_counter()
        modes = (self.model.training, self.backbone.model.training)
        self.model.eval()
        self.backbone.model.eval()
        try:
            metrics: dict[str, float] = {}
            previews: list[Any] = []
            if self.data.gaic:
                result = evaluate_samples(self.predictor, self.data.gaic, "gaic")
                metrics.update(result.metrics)
                previews = _previews(result.predictions[:PREVIEWS])
            if self.data.text:
                result = evaluate_samples(self.predictor, self.data.text, "textcrop")
                metrics.update({f"text_{k}": v for k, v in result.metrics.items()})
        finally:
            self.model.train(modes[0])
            self.backbone.model.train(modes[1])
        return ValidationResult(metrics, previews, time.perf_counter() - t0)


def _previews(records: list[dict]) -> list[Any]:
    """Validation images (at most ``PREVIEW_SIDE`` px) with their top-3 crops drawn, 1 = best."""
    from ..io.images import load_image
    from ..io.render import draw_overlay

    out = []
    for rec in records:
        image = load_image(rec["image"]).image
        size = image.size
        image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        boxes = [c["box"] for c in rec["crops"][:3]]
        out.append(draw_overlay(image, boxes, size))
    return out


@dataclass
class BestTracker:
    """The best value of ``metric`` so far (higher is better) and the step that reached it."""

    metric: str
    value: float | None = None
    step: int | None = None

    def update(self, metrics: dict[str, float], step: int) -> bool:
        """Take a validation's metrics; True when they improve on the best (strictly: a tie keeps
        the earlier checkpoint)."""
        if self.metric not in metrics:
            raise DatasetError(f"validation gave no {self.metric!r} (it has {', '.join(sorted(metrics))})")
        value = float(metrics[self.metric])
        if self.value is not None and not value > self.value:
            return False
        self.value, self.step = value, step
        return True

    @classmethod
    def from_folder(cls, metric: str, best_dir: Path) -> BestTracker:
        """The tracker of a resumed run: what ``best_dir/best.json`` says, if it is of ``metric``."""
        try:
            saved = json.loads((best_dir / BEST_FILE).read_text())
        except (OSError, ValueError):
            return cls(metric)
        if saved.get("metric") != metric:
            logger.warning("best checkpoint chosen by %r so far; now by %r", saved.get("metric"), metric)
            return cls(metric)
        return cls(metric, float(saved["value"]), int(saved["step"]))

    def record(self, metrics: dict[str, float]) -> dict:
        """What ``best.json`` holds."""
        return {"metric": self.metric, "value": self.value, "step": self.step, "metrics": dict(metrics)}


__all__ = [
    "BEST_FILE",
    "BEST_METRICS",
    "GAIC_METRICS",
    "TEXT_METRICS",
    "BestTracker",
    "ValidationData",
    "ValidationResult",
    "Validator",
    "check_validation_settings",
    "default_best_metric",
    "load_validation_data",
]
