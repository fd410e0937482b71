"""The evaluation harness: the paper's metrics for a model and its baselines on the same samples.

* TextCrop / Horanyi-PR format (:func:`clipcrop.data.datasets.load_textcrop`): per sample, the IoU of
  the top-1 crop with each human crop; IoU-Mean and IoU-Max averaged over samples (paper 4.2-4.3).
  Samples with an ``image_query`` are cropped for that image (one-shot, paper 4.5).
* GAIC (:func:`clipcrop.data.datasets.load_gaic`): Acc1/5, Acc1/10 and Jia et al.'s IoU accuracy on the
  ranked crops (paper 4.4), plus ``iou_top1_best`` (mean IoU of the top-1 crop with the best
  annotated crop). The query is the image's caption when captions are given, else none.

Baselines (``baselines=True``), run on the very same encoded images:

* ``whole_image``: the uncropped image;
* ``owlvit_top1``: OWL-ViT alone, the box of the single best-matching token for the full query
  (text embedding of the whole text, or the image-query embedding): the paper's "OWL-ViT" row;
  only for samples with a condition;
* ``union_box``: ``b_u``, the union of the boxes selected by the full text and its keywords;
* ``training_free``: ClipCrop's training-free mode (composition ranking around ``b_u``) sharing
  the model's backbone.

Boxes in results and prediction files are ``x0, y0, x1, y1`` pixels of the upright original image.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.datasets import CAPTION_FILES, GaicSample, TextCropSample, load_gaic, load_textcrop
from ..errors import DatasetError, ParameterError
from ..ops.box_ops import iou_np, round_box
from ..settings import ModelSettings
from .metrics import GaicAccumulator, IoUAccumulator

if TYPE_CHECKING:
    from ..predictor import ClipCrop

logger = logging.getLogger(__name__)

DATASETS = ("gaic", "textcrop")
BASELINES = ("whole_image", "owlvit_top1", "union_box", "training_free")
#: crops ranked per GAIC image (Acc1/10 and top-10 IoU accuracy need 10)
GAIC_TOP_K = 10
#: crops kept per sample for TextCrop-style data (the metric uses the first)
TEXTCROP_TOP_K = 5

Progress = Callable[[int], None]


@dataclass
class EvalConfig:
    """An evaluation run (what ``clipcrop evaluate`` parses its flags into).

    Attributes:
        dataset: ``gaic`` or ``textcrop``.
        root: dataset folder.
        annotations: textcrop: the manifest (default ``root/annotations.json``); gaic: the caption
            folder (``{train,valid,test}.json``) or one caption JSON file; None: unconditioned.
        split: GAIC split.
        baselines: also run the baselines.
        save_predictions: write one JSON line per sample here (atomically).
        limit: evaluate the first N samples only.
    """

    dataset: str
    root: str
    annotations: str | None = None
    split: str = "test"
    baselines: bool = False
    save_predictions: str | None = None
    limit: int | None = None

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise ParameterError(f"dataset {self.dataset!r} is not one of {', '.join(DATASETS)}")
        if self.limit is not None and self.limit < 1:
            raise ParameterError(f"limit must be at least 1, got {self.limit}")


@dataclass
class EvalResult:
    """Metrics of one evaluation.

    Attributes:
        dataset: ``gaic`` or ``textcrop``.
        samples: samples scored.
        metrics: the model's metrics (fractions in [0, 1], plus ``num_samples``).
        baselines: baseline name -> its metrics (empty without baselines).
        predictions: one record per scored sample (what ``save_predictions`` writes).
        skipped: samples that could not be scored, with the reason.
        mode: the predictor's mode (``trained`` / ``training-free``).
    """

    dataset: str
    samples: int
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    predictions: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    mode: str = ""

    def to_json(self) -> dict:
        """``{"samples", "metrics", "baselines", "dataset", "mode", "skipped"}``."""
        return {
            "samples": self.samples,
            "metrics": dict(self.metrics),
            "baselines": {k: dict(v) for k, v in self.baselines.items()},
            "dataset": self.dataset,
            "mode": self.mode,
            "skipped": list(self.skipped),
        }


# ----------------------------------------------------------------------------- helpers


class _Scorer:
    """Accumulates one method's metrics for the dataset at hand."""

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset
        self.acc: IoUAccumulator | GaicAccumulator = (
            IoUAccumulator() if dataset == "textcrop" else GaicAccumulator()
        )
        self.best_ious: list[float] = []

    def update(self, boxes: np.ndarray, truth: np.ndarray, mos: np.ndarray | None) -> None:
        if self.dataset == "textcrop":
            self.acc.update(boxes[0], truth)  # type: ignore[call-arg]
        else:
            if mos is None:
                raise DatasetError("GAIC crops are scored with their MOS; this sample has none")
            self.acc.update(boxes, truth, mos)  # type: ignore[call-arg]
            best = truth[mos == mos.max()]
            self.best_ious.append(float(iou_np(boxes[:1], best).max()))

    def __len__(self) -> int:
        return len(self.acc)

    def compute(self) -> dict[str, float]:
        out = self.acc.compute()
        if self.dataset == "gaic":
            out["iou_top1_best"] = float(np.mean(self.best_ious))
        return out


def _boxes(result) -> np.ndarray:
    return np.asarray([c.box for c in result], dtype=np.float64).reshape(-1, 4)


def _owlvit_top1(cc, encoded, query: str | None, image_query_embed) -> np.ndarray | None:
    """(1, 4) int pixel box (like the predictor's crops) of the best token for the full query
    embedding, or None without a query."""
    import torch

    if image_query_embed is not None:
        embeds = image_query_embed.reshape(1, -1)
    elif query is not None:
        embeds = cc.backbone.embed_texts([query])
    else:
        return None
    logits = encoded.features.logits(embeds.to(encoded.features.class_embeds.device))[0, :, 0]
    box = encoded.features.boxes[0, int(torch.argmax(logits))].float().cpu().numpy().astype(np.float64)
    w, h = encoded.width, encoded.height
    return np.asarray([round_box(box * np.array([w, h, w, h]), w, h)], dtype=np.float64)


def write_jsonl_atomic(path: str | os.PathLike, records: Sequence[dict]) -> None:
    """Write ``records`` as JSON lines to ``path`` atomically (permissions from the umask)."""
    from ..io.atomic_files import atomic_open

    with atomic_open(path, "w") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")


# ----------------------------------------------------------------------------- the harness


@dataclass(frozen=True)
class SampleTarget:
    """What one sample is scored against, and the condition it is cropped for.

    Attributes:
        truth: (K, 4) float64 annotated crops, xyxy pixels of the upright image.
        mos: (K,) their mean opinion scores (GAIC), or None (TextCrop: every crop is a human's).
        query: the text query, or None.
        image_query: path of the query image (it takes precedence over ``query``), or None.
    """

    truth: np.ndarray
    mos: np.ndarray | None
    query: str | None
    image_query: str | None


def sample_target(sample: GaicSample | TextCropSample, dataset: str) -> SampleTarget:
    """The :class:`SampleTarget` of a GAIC sample (its caption is the query) or a TextCrop sample.

    Raises:
        ParameterError: the sample is not of ``dataset``'s kind.
    """
    if dataset == "gaic" and isinstance(sample, GaicSample):
        return SampleTarget(
            sample.boxes_xyxy_px, np.asarray(sample.mos, dtype=np.float64), sample.caption, None
        )
    if dataset == "textcrop" and isinstance(sample, TextCropSample):
        image_query = str(sample.image_query_path) if sample.image_query_path is not None else None
        return SampleTarget(sample.boxes_xyxy_px, None, sample.query, image_query)
    raise ParameterError(f"a {type(sample).__name__} is not a sample of dataset {dataset!r}")


class _Run:
    """One evaluation in progress: the predictor (and the training-free one of the baselines),
    the scorers, the prediction records and the skipped samples."""

    def __init__(self, cc: ClipCrop, dataset: str, baselines: bool) -> None:
        from ..predictor import ClipCrop

        self.cc, self.dataset = cc, dataset
        self.top_k = min(GAIC_TOP_K if dataset == "gaic" else TEXTCROP_TOP_K, cc.max_top_k)
        self.free = ClipCrop(cc.backbone, None, limits=cc.limits, nms_iou=cc.nms_iou) if baselines else None
        self.main = _Scorer(dataset)
        self.base = {name: _Scorer(dataset) for name in BASELINES} if baselines else {}
        self.records: list[dict] = []
        self.skipped: list[str] = []

    def score(self, index: int, sample: GaicSample | TextCropSample) -> None:
        """Crop one sample, score it (and the baselines) and keep its record."""
        target = sample_target(sample, self.dataset)
        if target.mos is not None and len(target.mos) == 0:
            self.skipped.append(f"{sample.image_path}: no valid annotated crops")
            return
        cc = self.cc
        encoded = cc.encode(sample.image_path)
        # an image query takes precedence: it is what the sample was built to test
        condition = cc.prepare_condition(None if target.image_query else target.query, target.image_query)
        result = cc.crop_encoded(encoded, condition, top_k=self.top_k)
        self.main.update(_boxes(result), target.truth, target.mos)
        annotations = {"boxes": target.truth.tolist()}
        if target.mos is not None:
            annotations["mos"] = target.mos.tolist()
        record = {
            "index": getattr(sample, "index", index),
            "image": str(sample.image_path),
            "query": target.query,
            "image_query": target.image_query,
            "width": result.width,
            "height": result.height,
            "mode": result.mode,
            "crops": [c.to_dict() for c in result],
            "union_box": list(result.union_box),
            "annotations": annotations,
        }
        if self.free is not None:
            record["baselines"] = self._score_baselines(self.free, encoded, condition, result, target)
        self.records.append(record)

    def _score_baselines(
        self, free: ClipCrop, encoded, condition, result, target: SampleTarget
    ) -> dict[str, list]:
        """Score each baseline on the same encoded image (``free``: the training-free predictor
        on the model's backbone); returns their boxes by name."""
        w, h = result.width, result.height
        image_query = condition.kind == "image"
        free_cond = condition if image_query else free.prepare_condition(target.query, None)
        free_result = free.crop_encoded(encoded, free_cond, top_k=self.top_k)
        iq_embed = free_cond.embeds[0] if free_cond.kind == "image" else None
        candidates = {
            "whole_image": np.array([[0, 0, w, h]], dtype=np.float64),
            "owlvit_top1": _owlvit_top1(
                self.cc, encoded, target.query if not target.image_query else None, iq_embed
            ),
            "union_box": np.asarray([free_result.union_box], dtype=np.float64),
            "training_free": _boxes(free_result),
        }
        boxes = {}
        for name, cand in candidates.items():
            if cand is not None:
                self.base[name].update(cand, target.truth, target.mos)
                boxes[name] = cand.tolist()
        return boxes

    def result(self) -> EvalResult:
        if not len(self.main):
            raise DatasetError(
                "no sample could be scored" + (f" ({self.skipped[0]})" if self.skipped else "")
            )
        for reason in self.skipped:
            logger.warning("skipped %s", reason)
        return EvalResult(
            dataset=self.dataset,
            samples=len(self.main),
            metrics=self.main.compute(),
            baselines={name: s.compute() for name, s in self.base.items() if len(s)},
            predictions=self.records,
            skipped=self.skipped,
            mode=self.cc.mode,
        )


def evaluate_samples(
    cc: ClipCrop,
    samples: Sequence[GaicSample] | Sequence[TextCropSample],
    dataset: str,
    *,
    baselines: bool = False,
    progress: Progress | None = None,
) -> EvalResult:
    """Score a predictor on loaded samples.

    Args:
        cc: a :class:`~clipcrop.predictor.ClipCrop` (trained or training-free).
        samples: GAIC samples (their ``caption`` is the query; None: unconditioned) or TextCrop samples.
        dataset: ``gaic`` or ``textcrop`` (which metrics).
        baselines: also score :data:`BASELINES`.
        progress: called with 1 after each sample.

    Raises:
        ParameterError: an unknown dataset, or a sample of another dataset's kind.
        DatasetError: no sample could be scored.
    """
    if dataset not in DATASETS:
        raise ParameterError(f"dataset {dataset!r} is not one of {', '.join(DATASETS)}")
    run = _Run(cc, dataset, baselines)
    for i, sample in enumerate(samples):
        run.score(i, sample)
        if progress:
            progress(1)
    return run.result()


def load_gaic_for_eval(
    root: str | os.PathLike, split: str, annotations: str | os.PathLike | None
) -> list[GaicSample]:
    """GAIC samples whose ``caption`` is the query: from a caption folder, one caption JSON file
    (``{"X.jpg": "caption"}``), or none (unconditioned). Every image needs a caption when given."""
    if annotations is None:
        return load_gaic(root, split)
    path = Path(annotations)
    if path.is_dir():
        return load_gaic(root, split, text_annotations_dir=path, require_captions=True)
    if not path.is_file():
        raise DatasetError(
            f"caption annotations {path} not found (a folder with {{{','.join(CAPTION_FILES.values())}}}.json "
            "or one JSON file mapping image names to captions)"
        )
    try:
        captions = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(captions, dict) or not all(isinstance(v, str) for v in captions.values()):
        raise DatasetError(f"{path}: expected a JSON object mapping image file name -> caption")
    samples = load_gaic(root, split)
    missing = [s.name for s in samples if not captions.get(s.name, "").strip()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetError(
            f"{len(missing)} images without a caption in {path} ({', '.join(missing[:5])}{more})"
        )
    return [dataclasses.replace(s, caption=captions[s.name].strip()) for s in samples]


def load_samples(config: EvalConfig) -> list[GaicSample] | list[TextCropSample]:
    """The samples an :class:`EvalConfig` names (first ``limit`` only)."""
    config.validate()
    if config.dataset == "gaic":
        samples: list = load_gaic_for_eval(config.root, config.split, config.annotations)
    else:
        samples = load_textcrop(config.root, config.annotations)
    return samples[: config.limit] if config.limit is not None else samples


def evaluate(
    config: EvalConfig,
    model: ClipCrop | ModelSettings,
    *,
    samples: Sequence[GaicSample] | Sequence[TextCropSample] | None = None,
    progress: Progress | None = None,
) -> EvalResult:
    """The evaluation ``config`` describes: load the data, score the model (and the baselines),
    write the predictions if asked.

    Args:
        model: a loaded predictor, or the :class:`~clipcrop.settings.ModelSettings` of one (loaded
            after the data, so that a data error costs no model load).
        samples: the samples, when the caller loaded them already (:func:`load_samples`).
        progress: called with 1 after each sample.
    """
    if samples is None:
        samples = load_samples(config)
    cc = model.load() if isinstance(model, ModelSettings) else model
    result = evaluate_samples(cc, samples, config.dataset, baselines=config.baselines, progress=progress)
    if config.save_predictions:
        write_jsonl_atomic(config.save_predictions, result.predictions)
    return result


#: metrics shown in tables, per dataset
TABLE_METRICS = {
    "textcrop": ("iou_mean", "iou_max"),
    "gaic": ("acc1_5", "acc1_10", "acc_iou85_top5", "acc_iou90_top5", "iou_top1_best"),
}


def result_rows(result: EvalResult) -> list[tuple[str, dict[str, float]]]:
    """(method name, metrics) rows: the model first, then the baselines."""
    rows = [(f"ClipCrop ({result.mode})", result.metrics)]
    rows += [(name, metrics) for name, metrics in result.baselines.items()]
    return rows


__all__ = [
    "BASELINES",
    "DATASETS",
    "EvalConfig",
    "EvalResult",
    "TABLE_METRICS",
    "evaluate",
    "evaluate_samples",
    "SampleTarget",
    "sample_target",
    "load_gaic_for_eval",
    "load_samples",
    "result_rows",
    "write_jsonl_atomic",
]
