"""Fine-tuning OWL-ViT for open-vocabulary detection on your own data (``clipcrop finetune-backbone``).

ClipCrop selects image tokens by comparing their class embeddings with query embeddings, so a
backbone that detects *your* objects crops them better. This module fine-tunes an OWL-ViT/OWLv2
checkpoint (or trains a small random one, :func:`clipcrop.synthetic.random_models.make_random_owlvit`, from
scratch) the way OWL-ViT itself was trained, DETR-style:

* **Data**: a JSON-lines manifest, one image per line::

      {"image": "imgs/1.jpg", "objects": [{"box": [x0, y0, x1, y1], "text": "a red circle"}, ...]}

  paths relative to the manifest's folder, boxes in pixels of the upright image (x1/y1 exclusive).
  :func:`load_detection_manifest` reads it.
* **Augmentation** (seeded): horizontal flips, and optionally (``zoom``) windows of the image
  that cut no object, so objects are also seen close up.
* **Queries per step**: the texts of the batch's objects plus up to ``num_negatives`` texts of
  classes absent from the batch (drawn from the manifest's other texts). Texts name the same class
  when they are equal after lower-casing and dropping a leading article (:func:`class_key`: "a red
  circle" = "the red circle" = "red circle"), so synonyms are never each other's negatives.
* **Matching**: per image, each object is paired with one image token by
  :class:`clipcrop.training.matcher.HungarianMatcher` (class probability + L1 + GIoU costs, the crop
  decoder's matcher fed ``"pred_class_logits"`` and ``"labels"``).
* **Losses** (:class:`DetectionLoss`, named terms and a weight dict): ``loss_focal``, sigmoid focal
  loss over every token x query logit (``ImageFeatures.logits``), 1 for a matched token and each
  query of its object's class, 0 elsewhere; ``loss_l1`` and ``loss_giou`` on the matched tokens'
  boxes (normalised cxcywh / xyxy). Each is summed and divided by the number of objects.
* **Gradients** reach the vision tower and heads through ``Backbone.encode_with_grad`` and the
  text tower through ``Backbone.text_features`` (``Backbone.embed_texts`` is cached and no-grad, so it
  is not used here). The token-embedding table stays frozen by default (``train_token_embedding``).

Output folder (``out_dir``): a normal OWL-ViT checkpoint (``config.json``, ``model.safetensors``,
and the tokenizer and image-processor files copied from the input folder) that
``ClipCrop.from_pretrained`` and ``clipcrop train --backbone`` load like any other, plus
``finetune_state.pt`` (optimizer, LR schedule, step, RNG states: ``resume`` continues exactly)
and ``finetune_log.jsonl`` (one JSON object per step with each loss term). Saving writes a
complete new folder beside it and swaps it in with renames, so an interrupted save never leaves a
half-written checkpoint: the same run plumbing as ``clipcrop train``, :mod:`clipcrop.training.runloop`.

Every per-step decision (epoch order, horizontal flips, negative queries) comes from a generator
seeded by ``(seed, epoch, step)``, so a run stopped and resumed equals a run straight through.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

from ..data.datasets import _entry_boxes, image_size
from ..errors import DatasetError, ParameterError
from ..io.images import load_image
from ..limits import Limits
from ..modeling.backbone import Backbone
from ..ops.box_ops import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    fraction_inside_np,
    generalized_box_iou,
)
from . import runloop
from .matcher import HungarianMatcher
from .runloop import LR_SCHEDULES, LRSchedule, RunResult

logger = logging.getLogger(__name__)

STATE_FILE = "finetune_state.pt"
LOG_FILE = "finetune_log.jsonl"
STATE_FORMAT = "clipcrop-finetune/1"
RUN_FILES = runloop.RunFiles(STATE_FILE, LOG_FILE, STATE_FORMAT, kind="fine-tuning", rerun="run")
REINIT_CHOICES = ("auto", "always", "never")
#: zoom augmentation: smallest window side (fraction of the image) and tries to find one
ZOOM_MIN_SIDE = 0.4
ZOOM_TRIES = 8
#: fresh class head: initial logit scale, and the detection probability every token starts at
HEAD_LOGIT_SCALE = 5.0
HEAD_PRIOR_PROB = 0.01
#: files of the input folder that are *not* copied into the output (weights, config, our state)
_NOT_COPIED = re.compile(r"^(config\.json|.*\.safetensors|.*\.bin|.*\.index\.json|README\.md|\..*)$")
_ARTICLES = re.compile(r"^(a|an|the)\s+")


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DetectionSample:
    """One manifest line.

    Attributes:
        image_path: the image.
        boxes_xyxy_px: (K, 4) float64 object boxes, ``x0, y0, x1, y1`` upright pixels; K >= 0.
        texts: K object texts, row-aligned with the boxes.
        width, height: upright image size in pixels.
    """

    image_path: Path
    boxes_xyxy_px: np.ndarray
    texts: tuple[str, ...]
    width: int
    height: int

    @property
    def boxes_xyxy_norm(self) -> np.ndarray:
        """(K, 4) float64 object boxes, xyxy as fractions of the image's width and height."""
        return self.boxes_xyxy_px / np.array(
            [self.width, self.height, self.width, self.height], dtype=np.float64
        )


def class_key(text: str) -> str:
    """The class a text names: lower-cased, whitespace collapsed, leading article dropped."""
    return _ARTICLES.sub("", " ".join(text.lower().split()))


def load_detection_manifest(path: str | os.PathLike) -> list[DetectionSample]:
    """Read a detection manifest (see the module docstring).

    Raises:
        DatasetError: missing file, bad JSON, missing image, bad box or text (message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"detection manifest {path} not found (expected JSON lines of image/objects)")
    samples: list[DetectionSample] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not valid JSON ({exc})") from None
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("image"), str)
            or not entry["image"].strip()
        ):
            raise DatasetError(f'{where}: expected {{"image": path, "objects": [...]}}')
        objects = entry.get("objects")
        if not isinstance(objects, list):
            raise DatasetError(
                f"{where}: 'objects' must be a list of {{'box': [x0, y0, x1, y1], 'text': ...}}"
            )
        image_path = (path.parent / entry["image"]).resolve()
        if not image_path.is_file():
            raise DatasetError(f"{where}: image {image_path} not found")
        try:
            width, height = image_size(image_path)
        except DatasetError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        texts = []
        for j, obj in enumerate(objects):
            text = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise DatasetError(f"{where}: object {j} needs a non-empty 'text'")
            texts.append(" ".join(text.split()))
        # the same box checks as the crop manifests ("box j" is object j)
        boxes = _entry_boxes([o.get("box") for o in objects], where, width, height) if objects else []
        samples.append(
            DetectionSample(
                image_path, np.asarray(boxes, dtype=np.float64).reshape(-1, 4), tuple(texts), width, height
            )
        )
    if not samples:
        raise DatasetError(f"{path}: no images")
    return samples


# ----------------------------------------------------------------------------- configuration


@dataclass
class FinetuneConfig:
    """Everything that defines a fine-tuning run.

    Attributes:
        data: the detection manifest (JSON lines, see the module docstring).
        backbone: Hub id or folder of the OWL-ViT/OWLv2 checkpoint to start from.
        out_dir: output folder (the fine-tuned checkpoint, state and log).
        epochs, max_steps: length of the run; ``max_steps`` wins when both are given; default 10 epochs.
        stop_after: stop (with a checkpoint) after this step although the LR schedule runs to the
            end; ``resume`` continues exactly as if never stopped.
        batch_size: images per step.
        lr, weight_decay, grad_clip: AdamW and gradient-norm clipping (0 disables clipping).
        lr_schedule, warmup_steps: ``constant``, ``cosine`` or ``linear`` decay after a linear warm-up.
        num_negatives: texts of absent classes added to each step's queries.
        hflip: flip images (and boxes) horizontally with probability 1/2 (off for data whose texts
            say "left"/"right").
        zoom: share of images replaced by a zoomed-in window (40-100% of the image side) that cuts
            no object (scale augmentation: objects seen larger, as in a close-up image query).
        train_text: train the text tower too (else it is frozen).
        train_token_embedding: train the text tower's token-embedding table (49k rows; frozen by
            default: cheaper, and the vocabulary of a detection set is small).
        weight_focal, weight_l1, weight_giou: loss weights, also the matching costs.
        focal_alpha, focal_gamma: focal-loss settings.
        device: ``auto`` (GPU when there is one) or ``cpu``.
        save_every: checkpoint every this many steps (and always at the end).
        resume: continue from ``out_dir``'s checkpoint.
        overwrite: replace an existing checkpoint in ``out_dir`` (otherwise an error).
        seed: data order, flips, negatives.
        max_samples: train on the first N images only.
        cache_images: keep decoded images (reduced to the backbone's input size) in memory.
        reinit_heads: ``auto``, ``always`` or ``never``: start from fresh detection heads
            (:func:`init_detection_heads`); ``auto`` does when the checkpoint's box head saturates
            (:func:`heads_saturated`: a randomly initialised checkpoint), never on resume.
        progress: progress bar on stderr; None: when stderr is a terminal.
    """

    data: str
    backbone: str
    out_dir: str
    epochs: int | None = None
    max_steps: int | None = None
    stop_after: int | None = None
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    num_negatives: int = 16
    hflip: bool = True
    zoom: float = 0.0
    train_text: bool = True
    train_token_embedding: bool = False
    weight_focal: float = 2.0
    weight_l1: float = 5.0
    weight_giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    device: str = "auto"
    save_every: int | None = None
    resume: bool = False
    overwrite: bool = False
    seed: int = 0
    max_samples: int | None = None
    cache_images: bool = True
    reinit_heads: str = "auto"
    progress: bool | None = None

    DEFAULT_EPOCHS = 10

    def validate(self) -> None:
        """Raise :class:`ParameterError` for a setting that cannot work."""
        runloop.check_run_length(self)
        if not self.lr > 0:
            raise ParameterError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.warmup_steps < 0 or self.num_negatives < 0:
            raise ParameterError(
                "weight_decay, grad_clip, warmup_steps and num_negatives must not be negative"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ParameterError(f"lr_schedule {self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ParameterError(f"device {self.device!r} is not auto, cpu or cuda[:N]")
        if min(self.weight_focal, self.weight_l1, self.weight_giou) < 0:
            raise ParameterError("loss weights must not be negative")
        if not 0.0 <= self.zoom <= 1.0:
            raise ParameterError(f"zoom must be in [0, 1], got {self.zoom}")
        if not 0 <= self.focal_alpha <= 1 or self.focal_gamma < 0:
            raise ParameterError("focal_alpha must be in [0, 1] and focal_gamma >= 0")
        if self.resume and self.overwrite:
            raise ParameterError("resume and overwrite exclude each other")
        if self.reinit_heads not in REINIT_CHOICES:
            raise ParameterError(
                f"reinit_heads {self.reinit_heads!r} is not one of {', '.join(REINIT_CHOICES)}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class FinetuneResult(RunResult):
    """What :func:`finetune_backbone` did (fields: :class:`~clipcrop.training.runloop.RunResult`); the
    last two may be left out when building one."""

    history: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0


# ----------------------------------------------------------------------------- loss


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


# ----------------------------------------------------------------------------- helpers


def init_detection_heads(model: nn.Module, prior_prob: float = HEAD_PRIOR_PROB) -> None:
    """Fresh OWL-ViT detection heads, for training from scratch (DETR / RetinaNet practice).

    Randomly initialised checkpoints (``transformers``' default init) have box-head outputs in the
    hundreds: every box sigmoid saturates at 0 or 1 and no gradient reaches it. Here the box head
    gets Xavier weights and a zero last layer, so every token starts at OWL-ViT's box prior (its own
    patch, ``box_bias``); the class head gets logit scale :data:`HEAD_LOGIT_SCALE` and a shift that
    makes every initial detection probability ``prior_prob`` (the focal-loss prior).
    """
    box, cls = model.box_head, model.class_head
    with torch.no_grad():
        for layer in (box.dense0, box.dense1, cls.dense0):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(box.dense2.weight)
        nn.init.zeros_(box.dense2.bias)
        nn.init.zeros_(cls.logit_scale.weight)
        nn.init.constant_(cls.logit_scale.bias, HEAD_LOGIT_SCALE - 1.0)  # elu(x) + 1 = x + 1 for x > 0
        nn.init.zeros_(cls.logit_shift.weight)
        nn.init.constant_(cls.logit_shift.bias, math.log(prior_prob / (1 - prior_prob)) / HEAD_LOGIT_SCALE)


@torch.no_grad()
def heads_saturated(model: nn.Module, pixel_values: torch.Tensor, limit: float = 10.0) -> bool:
    """True when most box-head outputs (before the sigmoid, box prior added) exceed ``limit`` in
    magnitude on these images: the boxes cannot learn, the heads need :func:`init_detection_heads`."""
    feature_map = model.image_embedder(pixel_values=pixel_values)[0]
    b, h, w, d = feature_map.shape
    tokens = feature_map.reshape(b, h * w, d)
    raw = model.box_head(tokens) + model.compute_box_bias(h, w).to(tokens)
    return bool((raw.abs() > limit).float().mean() > 0.5)


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


# ----------------------------------------------------------------------------- the loop


class Finetuner:
    """One fine-tuning run; build and call :meth:`run` (or use :func:`finetune_backbone`).

    Args:
        config: the run.
        samples: training images instead of reading ``config.data``.
        on_step: called with each step's log record.
    """

    def __init__(
        self,
        config: FinetuneConfig,
        *,
        samples: Sequence[DetectionSample] | None = None,
        on_step: Callable[[dict], None] | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.out_dir = Path(config.out_dir)
        self.samples = list(samples) if samples is not None else load_detection_manifest(config.data)
        if config.max_samples is not None:
            self.samples = self.samples[: config.max_samples]
        self.on_step = on_step
        self.limits = Limits()
        self._images: dict[int, Image.Image] = {}
        # every class of the data, with the texts that name it (negatives are drawn from these)
        vocab: dict[str, list[str]] = {}
        for s in self.samples:
            for t in s.texts:
                forms = vocab.setdefault(class_key(t), [])
                if t not in forms:
                    forms.append(t)
        self.vocab = {k: sorted(v) for k, v in sorted(vocab.items())}
        if not self.vocab:
            raise DatasetError("the manifest has no objects to learn from")

    # ------------------------------------------------------------------ plan
    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.samples) / self.config.batch_size))

    def total_steps(self) -> int:
        cfg = self.config
        if cfg.max_steps is not None:
            return int(cfg.max_steps)
        return int(cfg.epochs or FinetuneConfig.DEFAULT_EPOCHS) * self.steps_per_epoch

    def step_plan(
        self, step: int
    ) -> tuple[list[int], list[bool], list[np.ndarray | None], np.random.Generator]:
        """Sample indices, flips, zoom windows and a generator (for negatives) of global step
        ``step``: a pure function of ``(seed, epoch, step in epoch)``."""
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
        return idx, flips, windows, rng

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

    def batch(
        self, step: int, side: int
    ) -> tuple[list[Image.Image], list[str], list[dict[str, torch.Tensor]]]:
        """Images, query texts and targets of one step (see :meth:`DetectionLoss.forward`)."""
        idx, flips, windows, rng = self.step_plan(step)
        images, per_image = [], []
        texts: list[str] = []
        for i, flip, window in zip(idx, flips, windows, strict=True):
            s = self.samples[i]
            boxes = s.boxes_xyxy_norm
            obj_texts = list(s.texts)
            if window is None:
                img = self._image(i, side)
            else:  # zoomed in: cut the window from the full-resolution image, keep the objects inside
                full = load_image(s.image_path, self.limits).image
                w, h = full.size
                img = full.crop(tuple(int(round(v)) for v in window * [w, h, w, h]))
                keep = fraction_inside_np(boxes, window) >= 0.9
                size = window[2:] - window[:2]
                boxes = np.clip((boxes[keep] - np.tile(window[:2], 2)) / np.tile(size, 2), 0.0, 1.0)
                obj_texts = [t for t, k in zip(obj_texts, keep, strict=True) if k]
            if flip:
                img = ImageOps.mirror(img)
                boxes = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], axis=1)
            images.append(img)
            per_image.append((boxes, obj_texts))
            texts += [t for t in obj_texts if t not in texts]
        present = {class_key(t) for t in texts}
        absent = [k for k in self.vocab if k not in present]
        n_neg = min(self.config.num_negatives, len(absent))
        for j in rng.choice(len(absent), size=n_neg, replace=False) if n_neg else []:
            forms = self.vocab[absent[int(j)]]
            texts.append(forms[int(rng.integers(len(forms)))])
        keys = [class_key(t) for t in texts]
        targets = []
        for boxes, obj_texts in per_image:
            labels = [texts.index(t) for t in obj_texts]
            classes = [[k == class_key(t) for k in keys] for t in obj_texts]
            targets.append(
                {
                    "boxes": box_xyxy_to_cxcywh(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
                    "labels": torch.as_tensor(labels, dtype=torch.int64),
                    "classes": torch.as_tensor(classes, dtype=torch.bool).reshape(-1, len(texts)),
                }
            )
        return images, texts, targets

    # ------------------------------------------------------------------ setup
    def _device(self) -> str:
        if self.config.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.config.device

    def _set_trainable(self, model: nn.Module) -> list[nn.Parameter]:
        cfg = self.config
        model.requires_grad_(True)
        clip = model.base_model  # the CLIP part: ``model.owlvit`` (OWL-ViT) or ``model.owlv2`` (OWLv2)
        if not cfg.train_text:
            clip.text_model.requires_grad_(False)
            clip.text_projection.requires_grad_(False)
        if not cfg.train_token_embedding:
            clip.text_model.embeddings.token_embedding.requires_grad_(False)
        return [p for p in model.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ run
    def run(self) -> FinetuneResult:
        cfg = self.config
        t_start = time.perf_counter()
        state = runloop.prepare_out_dir(
            self.out_dir, RUN_FILES, resume=cfg.resume, overwrite=cfg.overwrite, log=logger
        )
        self._log = runloop.StepLog(self.out_dir / LOG_FILE)
        if state is None:
            self._log.restart()
        source = str(self.out_dir) if state is not None else cfg.backbone
        self.source = source
        backbone = Backbone.from_pretrained(source, device=self._device())
        self.backbone = backbone
        model = backbone.model
        side = backbone.preprocessing.size
        if state is None:
            torch.manual_seed(cfg.seed)  # fresh heads (below) are a function of the seed too
        if state is None and cfg.reinit_heads != "never":
            images = self.batch(0, side)[0]
            if cfg.reinit_heads == "always" or heads_saturated(model, backbone.preprocess(images)):
                logger.warning(
                    "detection heads re-initialised (%s)",
                    "asked"
                    if cfg.reinit_heads == "always"
                    else "the checkpoint's box head saturates: a randomly initialised model",
                )
                init_detection_heads(model)
        params = self._set_trainable(model)
        model.train()
        total = self.total_steps()
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule.for_config(cfg, total))
        loss_fn = DetectionLoss(
            HungarianMatcher(cfg.weight_focal, cfg.weight_l1, cfg.weight_giou),
            {"loss_focal": cfg.weight_focal, "loss_l1": cfg.weight_l1, "loss_giou": cfg.weight_giou},
            alpha=cfg.focal_alpha,
            gamma=cfg.focal_gamma,
        )
        step = 0
        if state is not None:
            step = int(state["step"])
            runloop.restore_optimizer(optimizer, scheduler, state, LRSchedule.for_config(cfg, total))
            self._check_resume(state)
            runloop.set_rng_state(state["rng"])
        self._optimizer, self._scheduler = optimizer, scheduler
        self._loss_fn, self._params, self._side = loss_fn, params, side
        start_step = step
        self._log.write(
            {
                "event": "resume" if state is not None else "start",
                "step": step,
                "total_steps": total,
                "samples": len(self.samples),
                "classes": len(self.vocab),
                "steps_per_epoch": self.steps_per_epoch,
                "config": cfg.to_dict(),
            }
        )
        logger.info(
            "fine-tuning on %d images (%d classes), steps %d -> %d",
            len(self.samples),
            len(self.vocab),
            step,
            total,
        )
        loop = runloop.StepLoop.for_config(
            cfg, self._log, self._save, total, on_step=self.on_step, desc="finetune"
        )
        step, history = loop.run(self._steps, step, resumed=state is not None, started=t_start)
        model.eval()
        model.requires_grad_(False)
        return FinetuneResult(self.out_dir, step, total, start_step, history, time.perf_counter() - t_start)

    def _check_resume(self, state: dict) -> None:
        # a resume reads the backbone from out_dir; caching and the device do not change the result
        runloop.warn_changed_settings(
            state.get("config", {}),
            self.config.to_dict(),
            runloop.RUN_ONLY_SETTINGS | {"backbone", "cache_images", "device"},
            logger,
        )
        if state.get("num_samples") != len(self.samples):
            logger.warning("resuming with a different number of images: data order changes")

    # ------------------------------------------------------------------ one step
    def _steps(self, step: int, stop_at: int) -> Iterator[dict]:
        """Train from ``step`` to ``stop_at``; yield each step's log record."""
        while step < stop_at:
            t0 = time.perf_counter()
            values = self._train_step(step)
            step += 1
            yield runloop.step_record(step, (step - 1) // self.steps_per_epoch, values, t0)

    def _train_step(self, step: int) -> dict:
        """One optimizer step on the batch of ``step``; returns its loss terms and LR."""
        cfg, backbone, loss_fn = self.config, self.backbone, self._loss_fn
        images, texts, targets = self.batch(step, self._side)
        pixel_values = backbone.preprocess(images)
        feats = backbone.encode_with_grad(pixel_values, [im.size for im in images])
        # with gradients: ``Backbone.embed_texts`` is cached and no-grad
        with torch.set_grad_enabled(cfg.train_text):
            embeds = backbone.text_features(texts)
        logits = feats.logits(embeds)
        device = logits.device
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        losses = loss_fn(logits.float(), feats.boxes.float(), targets)
        total_loss = loss_fn.total(losses)
        total_loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self._params, cfg.grad_clip)
        self._optimizer.step()
        self._scheduler.step()
        self._optimizer.zero_grad(set_to_none=True)
        return {
            **{k: float(v.detach()) for k, v in losses.items() if k != "num_objects"},
            "loss": float(total_loss.detach()),
            "num_objects": int(losses["num_objects"]),
            "num_queries": len(texts),
            "lr": float(self._optimizer.param_groups[0]["lr"]),
        }

    # ------------------------------------------------------------------ saving
    def _copy_support_files(self, tmp: Path) -> None:
        """Tokenizer and image-processor files of the input: copied from its folder when it is
        one (so the output has exactly what the input had), saved from the loaded objects otherwise."""
        src = Path(self.source).expanduser()
        if src.is_dir():
            for entry in sorted(src.iterdir()):
                if (
                    entry.is_file()
                    and not _NOT_COPIED.match(entry.name)
                    and entry.name not in (STATE_FILE, LOG_FILE)
                ):
                    shutil.copy2(entry, tmp / entry.name)
            return
        from transformers import AutoImageProcessor

        self.backbone.tokenizer.save_pretrained(tmp)
        AutoImageProcessor.from_pretrained(self.source).save_pretrained(tmp)

    def _save(self, step: int) -> None:
        """Write the checkpoint at ``step`` into a temporary folder and swap it in."""
        tmp = runloop.checkpoint_tmp_dir(self.out_dir, step)
        self.backbone.model.save_pretrained(tmp)
        self._copy_support_files(tmp)
        torch.save(
            {
                "format": STATE_FORMAT,
                "step": step,
                "steps_per_epoch": self.steps_per_epoch,
                "num_samples": len(self.samples),
                "optimizer": self._optimizer.state_dict(),
                "scheduler": self._scheduler.state_dict(),
                "rng": runloop.rng_state(),
                "config": self.config.to_dict(),
            },
            tmp / STATE_FILE,
        )
        runloop.publish_complete(tmp, self.out_dir, step, logger)


def finetune_backbone(
    config: FinetuneConfig,
    *,
    samples: Sequence[DetectionSample] | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> FinetuneResult:
    """Fine-tune (or resume fine-tuning) an OWL-ViT backbone; see :class:`FinetuneConfig`.

    Deterministic on CPU for a given ``config.seed``; a run stopped (``stop_after``) and resumed
    ends with the same weights as one run straight through.

    Raises:
        ParameterError: bad settings, or ``out_dir`` holds a checkpoint and neither ``resume`` nor
            ``overwrite`` is set.
        DatasetError: missing or malformed manifest or images.
        ModelLoadError: the backbone cannot be loaded.
    """
    return Finetuner(config, samples=samples, on_step=on_step).run()


__all__ = [
    "DetectionLoss",
    "DetectionSample",
    "FinetuneConfig",
    "FinetuneResult",
    "Finetuner",
    "class_key",
    "finetune_backbone",
    "heads_saturated",
    "init_detection_heads",
    "load_detection_manifest",
    "sigmoid_focal_loss",
    "top1_box_iou",
]
