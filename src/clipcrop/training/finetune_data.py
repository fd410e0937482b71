"""The batches of backbone fine-tuning: which images make up a step, their augmentation, the queries.

* **Augmentation** (seeded): horizontal flips, and optionally (``zoom``) windows of the image
  that cut no object, so objects are also seen close up.
* **Queries per step**: the texts of the batch's objects and their other names
  (``"other_texts"``), plus up to ``num_negatives`` texts of classes absent from the batch (drawn
  from the manifest's other texts); texts of one class (:func:`clipcrop.data.detection.class_key`)
  are never each other's negatives, and an object is a positive for each of its names.

Every per-step decision (epoch order, flips, zoom windows, negative queries) comes from a
generator seeded by ``(seed, epoch, step)``, so a run stopped and resumed equals a run straight
through.

Box formats: samples hold pixels; windows and the boxes of a batch's images are normalised xyxy;
targets are normalised cxcywh (what :class:`~clipcrop.training.detection_loss.DetectionLoss` takes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from ..data.detection import DetectionSample, class_key
from ..errors import DatasetError
from ..io.images import load_image
from ..limits import Limits
from ..ops.box_ops import box_xyxy_to_cxcywh, fraction_inside_np
from .finetune_config import FinetuneConfig

#: zoom augmentation: smallest window side (fraction of the image) and tries to find one
ZOOM_MIN_SIDE = 0.4
ZOOM_TRIES = 8


@dataclass
class StepPlan:
    """What one step is made of, decided without loading an image.

    Attributes:
        indices: sample index of each image of the batch.
        flips: whether each image is mirrored.
        windows: each image's zoom window (normalised xyxy), or None (the whole image).
        rng: the step's generator, for drawing the negative queries after the plan.
    """

    indices: list[int]
    flips: list[bool]
    windows: list[np.ndarray | None]
    rng: np.random.Generator


@dataclass
class DetectionBatch:
    """The inputs of one step.

    Attributes:
        images: the (augmented) RGB images.
        texts: the step's queries: every object text of the batch, then the negatives.
        targets: per image, ``"boxes"`` (K, 4) normalised cxcywh, ``"labels"`` (K,) int64 column of
            each object's own text and ``"classes"`` (K, C) bool, every column naming it (its
            class or one of its other names).
    """

    images: list[Image.Image]
    texts: list[str]
    targets: list[dict[str, torch.Tensor]]


def _every_name(texts: Sequence[str], other_texts: Sequence[Sequence[str]]) -> list[str]:
    """The objects' own texts, then each object's other names, in order (repeats kept)."""
    return [*texts, *(name for names in other_texts for name in names)]


class DetectionBatches:
    """The batch of every step of a fine-tuning run, a pure function of the seed and the step.

    Args:
        samples: the manifest's images.
        config: the run (seed, batch size, flips, zoom, negatives, image cache).
    """

    def __init__(self, samples: Sequence[DetectionSample], config: FinetuneConfig) -> None:
        self.samples = list(samples)
        self.config = config
        self.limits = Limits()
        self._images: dict[int, Image.Image] = {}
        # every class of the data, with the texts that name it (negatives are drawn from these)
        vocab: dict[str, list[str]] = {}
        for s in self.samples:
            for t in _every_name(s.texts, s.other_texts):
                forms = vocab.setdefault(class_key(t), [])
                if t not in forms:
                    forms.append(t)
        self.vocab = {k: sorted(v) for k, v in sorted(vocab.items())}
        if not self.vocab:
            raise DatasetError("the manifest has no objects to learn from")

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.samples) / self.config.batch_size))

    def step_plan(self, step: int) -> StepPlan:
        """The images, flips and zoom windows of global step ``step``: a pure function of
        ``(seed, epoch, step in epoch)``."""
        cfg = self.config
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        order = np.resize(
            np.random.default_rng([cfg.seed, epoch]).permutation(len(self.samples)),
            self.steps_per_epoch * cfg.batch_size,
        )
        idx = [int(i) for i in order[in_epoch * cfg.batch_size : (in_epoch + 1) * cfg.batch_size]]
        rng = np.random.default_rng([cfg.seed, epoch, in_epoch, 3])
        flips = [bool(cfg.hflip and rng.random() < 0.5) for _ in idx]
        windows = [self._zoom_window(i, rng) if cfg.zoom and rng.random() < cfg.zoom else None for i in idx]
        return StepPlan(idx, flips, windows, rng)

    def _zoom_window(self, index: int, rng: np.random.Generator) -> np.ndarray | None:
        """A random window (normalised xyxy, the image's aspect ratio, ``ZOOM_MIN_SIDE`` to all of
        it) that cuts no object: each is at least 90% inside or at most 10%, and one is inside.
        None when a few tries find none."""
        boxes = self.samples[index].boxes_xyxy_norm
        if not len(boxes):
            return None
        for _ in range(ZOOM_TRIES):
            side = rng.uniform(ZOOM_MIN_SIDE, 1.0)
            x0, y0 = rng.uniform(0.0, 1.0 - side, size=2)
            window = np.array([x0, y0, x0 + side, y0 + side])
            frac = fraction_inside_np(boxes, window)
            if ((frac >= 0.9) | (frac <= 0.1)).all() and (frac >= 0.9).any():
                return window
        return None

    def _image(self, index: int, side: int) -> Image.Image:
        img = self._images.get(index)
        if img is None:
            img = load_image(self.samples[index].image_path, self.limits).image
            if self.config.cache_images:
                scale = side / max(img.size)
                if scale < 1:
                    img = img.resize(
                        (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC
                    )
                self._images[index] = img
        return img

    def _augmented(
        self, index: int, flip: bool, window: np.ndarray | None, side: int
    ) -> tuple[Image.Image, np.ndarray, list[str], list[tuple[str, ...]]]:
        """One image with its kept objects' boxes (normalised xyxy), texts and other names."""
        s = self.samples[index]
        boxes = s.boxes_xyxy_norm
        obj_texts, others = list(s.texts), list(s.other_texts)
        if window is None:
            img = self._image(index, side)
        else:  # zoomed in: cut the window from the full-resolution image, keep the objects inside
            full = load_image(s.image_path, self.limits).image
            w, h = full.size
            img = full.crop(tuple(int(round(v)) for v in window * [w, h, w, h]))
            keep = fraction_inside_np(boxes, window) >= 0.9
            size = window[2:] - window[:2]
            boxes = np.clip((boxes[keep] - np.tile(window[:2], 2)) / np.tile(size, 2), 0.0, 1.0)
            obj_texts = [t for t, k in zip(obj_texts, keep, strict=True) if k]
            others = [o for o, k in zip(others, keep, strict=True) if k]
        if flip:
            img = ImageOps.mirror(img)
            boxes = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], axis=1)
        return img, boxes, obj_texts, others

    def batch(self, step: int, side: int) -> DetectionBatch:
        """Images, query texts and targets of one step; cached images are reduced to ``side``
        pixels (the backbone's input size)."""
        plan = self.step_plan(step)
        images, per_image = [], []
        texts: list[str] = []
        for i, flip, window in zip(plan.indices, plan.flips, plan.windows, strict=True):
            img, boxes, obj_texts, others = self._augmented(i, flip, window, side)
            images.append(img)
            per_image.append((boxes, obj_texts, others))
            for t in _every_name(obj_texts, others):
                if t not in texts:
                    texts.append(t)
        rng = plan.rng
        present = {class_key(t) for t in texts}
        absent = [k for k in self.vocab if k not in present]
        n_neg = min(self.config.num_negatives, len(absent))
        for j in rng.choice(len(absent), size=n_neg, replace=False) if n_neg else []:
            forms = self.vocab[absent[int(j)]]
            texts.append(forms[int(rng.integers(len(forms)))])
        keys = [class_key(t) for t in texts]
        targets = []
        for boxes, obj_texts, others in per_image:
            labels = [texts.index(t) for t in obj_texts]
            names = [{class_key(t), *map(class_key, o)} for t, o in zip(obj_texts, others, strict=True)]
            classes = [[k in n for k in keys] for n in names]
            targets.append(
                {
                    "boxes": box_xyxy_to_cxcywh(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
                    "labels": torch.as_tensor(labels, dtype=torch.int64),
                    "classes": torch.as_tensor(classes, dtype=torch.bool).reshape(-1, len(texts)),
                }
            )
        return DetectionBatch(images, texts, targets)


__all__ = ["ZOOM_MIN_SIDE", "ZOOM_TRIES", "DetectionBatch", "DetectionBatches", "StepPlan"]
