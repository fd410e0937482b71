"""Training ClipCrop's crop decoder on GAIC with captions (paper section 3.3).

Pieces, DETR-style:

* :class:`TrainConfig`: every setting of a run (the CLI converts its flags into one).
* :class:`TrainingData`: which samples make up each step and how each one is augmented. Every
  decision (epoch order, mosaic grid, target tile, the other tiles, whether the text is dropped) is
  drawn from a generator seeded by ``(seed, epoch, position)``, never from global state, so a step's
  batch is a pure function of the seed and the step number: resuming, ``num_workers`` and the
  feature cache cannot change it.
* :class:`Trainer`: the loop. The backbone (frozen by default) encodes images, the condition
  (full text and/or keywords, :data:`clipcrop.modeling.model.VARIANTS`) selects tokens
  (:func:`clipcrop.modeling.selection.select_tokens`; in mosaics only tokens near the target tile's best crop
  may be selected, :func:`clipcrop.data.mosaic.filter_initial_boxes`), the decoder predicts crops relative
  to ``b_u``, and :class:`clipcrop.training.criterion.SetCriterion` scores them against the target tile's
  annotated crops (Hungarian matching to MOS >= 4 crops, L1 + GIoU, score BCE with local-redundancy
  smoothing, the same on every decoder layer).

Box formats: GAIC crops enter as pixels (:class:`~clipcrop.data.datasets.GaicSample`), are normalised
xyxy in the (mosaic) image for mosaics and selection, and cxcywh normalised in the criterion's
targets, which is what the decoder emits.

Mosaics and text drop: a sample trained without a condition (``base`` variant, or text dropped for
the ``text_drop`` share of samples so that one checkpoint also crops un-conditioned) is always a
single image, since without text nothing says which tile of a mosaic the targets belong to.

Runs on CPU, one GPU or several through HF Accelerate (``accelerate launch -m clipcrop.cli train``).
Output folder (``out_dir``): the latest checkpoint in ClipCrop's format (``config.json``,
``model.safetensors``, optionally ``backbone/``), ``training_state.pt`` (optimizer, LR schedule,
step, RNG states) and ``train_log.jsonl``. Each save writes a complete new folder beside it and
swaps it in with renames, so an interrupted save never leaves a half-written checkpoint. That
plumbing (folder checks, saving, logging, the loop around the steps) is shared with backbone
fine-tuning in :mod:`clipcrop.training.runloop`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.datasets import GaicSample, load_gaic
from ..data.mosaic import filter_initial_boxes, make_mosaic, sample_grid
from ..errors import DatasetError, ParameterError
from ..io.images import load_image
from ..limits import Limits
from ..modeling.backbone import DEFAULT_BACKBONE, Backbone, ImageFeatures
from ..modeling.decoder import DecoderConfig
from ..modeling.model import PROMPT_TEMPLATE, VARIANTS, ClipCropModel, portable_backbone_ref
from ..modeling.selection import Selection, condition_texts, select_tokens, unconditioned
from . import runloop
from .criterion import SetCriterion, build_target
from .matcher import HungarianMatcher
from .runloop import (  # still importable from here, where most of them used to live
    LR_SCHEDULES,
    LRSchedule,
    RunResult,
    clear_checkpoint,
    publish_checkpoint,
    recover_checkpoint_dir,
)

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
LOG_FILE = "train_log.jsonl"
STATE_FORMAT = "clipcrop-train/1"
RUN_FILES = runloop.RunFiles(STATE_FILE, LOG_FILE, STATE_FORMAT, kind="training", rerun="train")
#: decoder sizes of a default run (the paper's M = 90 queries); ``input_dim`` comes from the backbone
DEFAULT_DECODER = {k: v for k, v in DecoderConfig().to_dict().items() if k != "input_dim"}
#: OWL-ViT parts that produce image tokens, boxes and class embeddings (what fine-tuning trains);
#: the text tower stays frozen so cached text embeddings stay valid
_IMAGE_SIDE_MODULES = ("owlvit.vision_model", "owlv2.vision_model", "layer_norm", "class_head", "box_head")


# ----------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Attributes:
        gaic_root: GAIC folder (``images/<split>``, ``annotations/<split>``); may be None when
            :func:`train` gets ``samples``.
        text_annotations: folder of the caption files (``train.json`` ...); required unless
            ``variant == "base"``.
        backbone: Hub id or folder of the OWL-ViT/OWLv2 weights.
        out_dir: checkpoint folder (see the module docstring).
        split: GAIC split to train on.
        variant: ``full`` (full text + keywords, the paper's ClipCrop), ``key`` (keywords only),
            ``main`` (full text only) or ``base`` (no text).
        epochs, max_steps: length of the run; ``max_steps`` wins when both are given; default
            30 epochs.
        stop_after: stop (with a checkpoint) after this step although the LR schedule runs to
            ``max_steps``; ``resume`` continues exactly as if never stopped.
        batch_size: samples per step and process.
        lr, weight_decay, grad_clip: AdamW and gradient-norm clipping (0 disables clipping).
        lr_schedule: ``constant``, ``cosine`` or ``linear`` decay after ``warmup_steps`` of linear warm-up.
        mosaic: mosaic augmentation (single, 2x2, 3x3 with equal probability).
        text_drop: share of text-conditioned samples trained without their text.
        filter_center_dist, filter_min_area: :func:`clipcrop.data.mosaic.filter_initial_boxes` settings.
        decoder: :class:`~clipcrop.modeling.decoder.DecoderConfig` fields except ``input_dim``.
        weight_score, weight_l1, weight_giou: loss weights (also the matching costs).
        aux_loss: losses on every decoder layer, not only the last.
        redundancy_iou: local-redundancy smoothing IoU (paper: 0.9).
        positive_mos: MOS from which an annotated crop is a positive.
        min_score, max_keywords, prompt_template: token-selection settings saved into the checkpoint.
        finetune_backbone_lr: fine-tune OWL-ViT's image side at this learning rate (None: frozen).
        mixed_precision: ``no``, ``fp16`` or ``bf16`` (GPU).
        device: ``auto`` (GPU when there is one) or ``cpu``.
        save_every: checkpoint every this many steps (and always at the end).
        resume: continue from ``out_dir``'s checkpoint.
        overwrite: replace an existing checkpoint in ``out_dir`` (otherwise an error).
        seed: seeds initialisation, data order and augmentation.
        num_workers: data-loading processes (images are decoded and composed there).
        feature_cache: with a frozen backbone, keep the features of single (non-mosaic) images in
            memory after their first use (fp32 on CPU; ~3 MB per image for ViT-B/32).
        max_samples: train on the first N samples only.
        progress: progress bar on stderr; None: when stderr is a terminal.
    """

    gaic_root: str | None = None
    text_annotations: str | None = None
    backbone: str = DEFAULT_BACKBONE
    out_dir: str = "clipcrop-checkpoint"
    split: str = "train"
    variant: str = "full"
    epochs: int | None = None
    max_steps: int | None = None
    stop_after: int | None = None
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    mosaic: bool = True
    text_drop: float = 0.2
    filter_center_dist: float = 0.5
    filter_min_area: float = 0.5
    decoder: dict = field(default_factory=lambda: dict(DEFAULT_DECODER))
    weight_score: float = 1.0
    weight_l1: float = 5.0
    weight_giou: float = 2.0
    aux_loss: bool = True
    redundancy_iou: float = 0.9
    positive_mos: float = 4.0
    min_score: float = 0.05
    max_keywords: int = 8
    prompt_template: str = PROMPT_TEMPLATE
    finetune_backbone_lr: float | None = None
    mixed_precision: str = "no"
    device: str = "auto"
    save_every: int | None = None
    resume: bool = False
    overwrite: bool = False
    seed: int = 0
    num_workers: int = 0
    feature_cache: bool = True
    max_samples: int | None = None
    progress: bool | None = None

    DEFAULT_EPOCHS = 30

    def validate(self) -> None:
        """Raise :class:`ParameterError` for a setting that cannot work."""
        if self.variant not in VARIANTS:
            raise ParameterError(f"variant {self.variant!r} is not one of {', '.join(VARIANTS)}")
        if self.variant != "base" and not self.text_annotations and self.gaic_root is not None:
            raise ParameterError(
                f"variant {self.variant!r} trains on captions: pass the text annotations folder "
                "(--text-annotations DIR), or use --variant base"
            )
        runloop.check_run_length(self)
        if not self.lr > 0 or (self.finetune_backbone_lr is not None and not self.finetune_backbone_lr > 0):
            raise ParameterError("learning rates must be positive")
        if not 0.0 <= self.text_drop <= 1.0:
            raise ParameterError(f"text_drop must be in [0, 1], got {self.text_drop}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ParameterError(f"lr_schedule {self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ParameterError(f"mixed_precision {self.mixed_precision!r} is not one of no, fp16, bf16")
        if self.device not in ("auto", "cpu"):
            raise ParameterError(f"device {self.device!r} is not auto or cpu (GPUs are chosen by accelerate)")
        if self.num_workers < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ParameterError("num_workers, warmup_steps and grad_clip must not be negative")
        unknown = set(self.decoder) - set(DecoderConfig.__dataclass_fields__)
        if unknown:
            raise ParameterError(f"unknown decoder settings: {', '.join(sorted(unknown))}")
        if self.resume and self.overwrite:
            raise ParameterError("resume and overwrite exclude each other")

    @property
    def selection(self) -> dict:
        """Token-selection settings written into the checkpoint."""
        return {
            "min_score": self.min_score,
            "max_keywords": self.max_keywords,
            "prompt_template": self.prompt_template,
            **VARIANTS[self.variant],
        }

    @property
    def uses_text(self) -> bool:
        return bool(VARIANTS[self.variant]["use_text"])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult(RunResult):
    """What :func:`train` did (fields: :class:`~clipcrop.training.runloop.RunResult`); ``history`` is what
    ``train_log.jsonl`` got."""


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ItemPlan:
    """How one training sample is built (decided up front, without I/O).

    Attributes:
        sample_index: index of the GAIC sample that carries the caption and the targets.
        grid: 1, 2 or 3.
        target_tile: row-major tile of the target in the mosaic (0 when grid is 1).
        tiles: sample indices of every tile, row-major (``tiles[target_tile] == sample_index``).
        drop_text: train this sample without its text.
        load_image: False when the (single) image's features are cached already.
    """

    sample_index: int
    grid: int
    target_tile: int
    tiles: tuple[int, ...]
    drop_text: bool
    load_image: bool = True


@dataclass
class TrainItem:
    """A built training sample.

    Attributes:
        plan: how it was built.
        image: the RGB (mosaic) image, or None when not loaded (cached features).
        size: (width, height) of the (mosaic) image in pixels.
        boxes: (K, 4) float32 target crops, normalised xyxy in the (mosaic) image.
        mos: (K,) float32 their MOS.
        best_crop: (4,) float32 the target's best crop, normalised xyxy in the mosaic; None when K = 0.
        caption: the condition text, None when trained without text.
    """

    plan: ItemPlan
    image: Any
    size: tuple[int, int]
    boxes: np.ndarray
    mos: np.ndarray
    best_crop: np.ndarray | None
    caption: str | None


class TrainingData:
    """Epoch order and per-sample augmentation, a pure function of ``(seed, epoch, position)``.

    Each epoch visits every sample once in a seeded random order; the order is padded (with its own
    first samples) to whole global batches of ``batch_size * world_size``. Global batch ``s`` of the
    epoch is positions ``s*B*P ... (s+1)*B*P - 1``; process ``r`` takes the ``r``-th slice of ``B``.

    Args:
        samples: the GAIC samples.
        config: the run's settings (seed, batch size, mosaic, text use, text drop).
        world_size, rank: data-parallel processes and this one's index.
        mosaic_max_side: mosaics are composed at most this many pixels wide or high (the backbone
            resizes them to its input size anyway).
    """

    def __init__(
        self,
        samples: Sequence[GaicSample],
        config: TrainConfig,
        world_size: int = 1,
        rank: int = 0,
        mosaic_max_side: int = 768,
    ) -> None:
        if not samples:
            raise DatasetError("no training samples")
        self.samples = list(samples)
        self.config = config
        self.world_size = world_size
        self.rank = rank
        self.mosaic_max_side = mosaic_max_side
        self.limits = Limits()

    @property
    def global_batch(self) -> int:
        return self.config.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.samples) / self.global_batch))

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Sample indices of every global position of ``epoch`` (length ``steps_per_epoch * B * P``)."""
        n = len(self.samples)
        perm = np.random.default_rng([self.config.seed, epoch]).permutation(n)
        total = self.steps_per_epoch * self.global_batch
        return np.resize(perm, total)  # pads by repeating the order from its start

    def plan(self, epoch: int, position: int, sample_index: int) -> ItemPlan:
        """Decide how the sample at global ``position`` of ``epoch`` is built."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch, position, 1])
        drop_text = bool(cfg.uses_text and rng.random() < cfg.text_drop)
        conditioned = cfg.uses_text and not drop_text
        grid = sample_grid(rng) if cfg.mosaic and conditioned else 1
        if grid == 1:
            return ItemPlan(sample_index, 1, 0, (sample_index,), drop_text)
        target_tile = int(rng.integers(grid * grid))
        others = [i for i in range(len(self.samples)) if i != sample_index] or [sample_index]
        picks = rng.choice(len(others), size=grid * grid - 1, replace=len(others) < grid * grid - 1)
        tiles = [others[int(i)] for i in picks]
        tiles.insert(target_tile, sample_index)
        return ItemPlan(sample_index, grid, target_tile, tuple(tiles), drop_text)

    def plans_for_step(self, epoch: int, step_in_epoch: int) -> list[ItemPlan]:
        """This process's plans for one step."""
        order = self.epoch_order(epoch)
        start = step_in_epoch * self.global_batch + self.rank * self.config.batch_size
        return [self.plan(epoch, p, int(order[p])) for p in range(start, start + self.config.batch_size)]

    def build(self, plan: ItemPlan) -> TrainItem:
        """Load and compose one sample (runs in data-loader workers)."""
        sample = self.samples[plan.sample_index]
        boxes = sample.boxes_xyxy_norm()
        mos = np.asarray(sample.mos, dtype=np.float64)
        best = boxes[sample.best_crop_index()] if len(mos) else None
        caption = None if (plan.drop_text or not self.config.uses_text) else sample.caption
        if plan.grid == 1:
            image = self._load(plan.sample_index) if plan.load_image else None
            return TrainItem(
                plan,
                image,
                (sample.width, sample.height),
                boxes.astype(np.float32),
                mos.astype(np.float32),
                None if best is None else best.astype(np.float32),
                caption,
            )
        images = [self._load(i) for i in plan.tiles]
        target = images[plan.target_tile]
        scale = min(1.0, self.mosaic_max_side / (plan.grid * max(target.size)))
        if scale < 1.0:
            cell = (max(1, round(target.width * scale)), max(1, round(target.height * scale)))
            images[plan.target_tile] = target.resize(cell, resample=3)
        mosaic = make_mosaic(images, plan.grid, plan.target_tile)
        boxes_m = mosaic.to_mosaic(boxes) if len(boxes) else boxes
        best_m = mosaic.to_mosaic(best) if best is not None else None
        return TrainItem(
            plan,
            mosaic.image,
            mosaic.image.size,
            np.asarray(boxes_m, dtype=np.float32).reshape(-1, 4),
            mos.astype(np.float32),
            None if best_m is None else np.asarray(best_m, dtype=np.float32),
            caption,
        )

    def _load(self, index: int):
        return load_image(self.samples[index].image_path, self.limits).image


class _StepDataset(torch.utils.data.Dataset):
    """Plans of consecutive steps, flattened; ``DataLoader(batch_size=B)`` regroups them by step."""

    def __init__(self, data: TrainingData, plans: list[ItemPlan]) -> None:
        self.data = data
        self.plans = plans

    def __len__(self) -> int:
        return len(self.plans)

    def __getitem__(self, index: int) -> TrainItem:
        return self.data.build(self.plans[index])


def _collate(items: list[TrainItem]) -> list[TrainItem]:
    return items


# ----------------------------------------------------------------------------- model wrapper


def _features_to(feats: ImageFeatures, device: torch.device | str) -> ImageFeatures:
    return feats.to(device)


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
            assert pixel_values is not None
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
        d = tokens.shape[-1]
        condition = torch.stack(
            [s.mean_token if s.mean_token is not None else tokens.new_zeros(d) for s in selections]
        )
        has_condition = torch.tensor([s.conditioned for s in selections], device=tokens.device)
        union = torch.stack([s.union.to(token_boxes) for s in selections])
        return self.model(tokens, token_boxes, condition, has_condition, union), selections


# ----------------------------------------------------------------------------- checkpoint folder


def has_checkpoint(out_dir: Path) -> bool:
    """Does ``out_dir`` hold a (ClipCrop or training) checkpoint?"""
    return runloop.holds_checkpoint(out_dir, STATE_FILE)


# ----------------------------------------------------------------------------- the loop


class Trainer:
    """One training run; build and call :meth:`run` (or use :func:`train`).

    Args:
        config: the run.
        samples: training samples instead of reading ``config.gaic_root`` (they need captions
            unless the variant is ``base``).
        backbone: an already loaded backbone (frozen runs only), instead of ``config.backbone``.
        on_step: called with each step's log record (after the step).
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        samples: Sequence[GaicSample] | None = None,
        backbone: Backbone | None = None,
        on_step: Callable[[dict], None] | None = None,
    ) -> None:
        config.validate()
        if backbone is not None and config.finetune_backbone_lr is not None:
            raise ParameterError("pass a backbone name, not a loaded backbone, to fine-tune it")
        self.config = config
        self.out_dir = Path(config.out_dir)
        self._samples = samples
        self._backbone = backbone
        self.on_step = on_step

    # ------------------------------------------------------------------ setup
    def _load_samples(self) -> list[GaicSample]:
        cfg = self.config
        if self._samples is not None:
            samples = list(self._samples)
        else:
            if cfg.gaic_root is None:
                raise ParameterError("no training data: set gaic_root or pass samples")
            samples = load_gaic(
                cfg.gaic_root,
                cfg.split,
                text_annotations_dir=cfg.text_annotations if cfg.text_annotations else None,
                require_captions=cfg.uses_text,
            )
        if cfg.max_samples is not None:
            samples = samples[: cfg.max_samples]
        if cfg.uses_text:
            missing = [s.name for s in samples if not s.caption]
            if missing:
                shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                raise DatasetError(
                    f"{len(missing)} training images have no caption ({shown}); the {cfg.variant!r} "
                    "variant needs one per image (or train --variant base)"
                )
        empty = sum(1 for s in samples if len(s.mos) == 0)
        if empty:
            logger.warning("%d training images have no valid annotated crops (score loss only)", empty)
        if not samples:
            raise DatasetError("no training samples")
        return samples

    def _total_steps(self, steps_per_epoch: int) -> int:
        cfg = self.config
        if cfg.max_steps is not None:
            return int(cfg.max_steps)
        return int(cfg.epochs or TrainConfig.DEFAULT_EPOCHS) * steps_per_epoch

    # ------------------------------------------------------------------ run
    def run(self) -> TrainResult:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        cfg = self.config
        t_start = time.perf_counter()
        accelerator = Accelerator(
            cpu=cfg.device == "cpu",
            mixed_precision=cfg.mixed_precision,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
        )
        self.accelerator = accelerator
        main = accelerator.is_main_process
        self._log = runloop.StepLog(self.out_dir / LOG_FILE, enabled=main)
        state = None
        if main:
            state = runloop.prepare_out_dir(
                self.out_dir, RUN_FILES, resume=cfg.resume, overwrite=cfg.overwrite, log=logger
            )
        accelerator.wait_for_everyone()
        if not main and cfg.resume:
            state = runloop.load_state(self.out_dir / STATE_FILE)
        if main and not cfg.resume:
            clear_checkpoint(self.out_dir)
            self._log.restart()
        set_seed(cfg.seed)

        samples = self._load_samples()
        finetune = cfg.finetune_backbone_lr is not None
        backbone_source = cfg.backbone
        # a checkpoint with its own (fine-tuned) backbone keeps it, frozen or not
        self._save_backbone = finetune
        if state is not None and (self.out_dir / "backbone").is_dir():
            if self._backbone is not None:
                raise ParameterError(f"{self.out_dir} holds its own backbone; do not pass another one")
            backbone_source = str(self.out_dir / "backbone")
            self._save_backbone = True
        backbone = self._backbone or Backbone.from_pretrained(backbone_source, device=accelerator.device)
        self.backbone = backbone
        if finetune:
            for name in _IMAGE_SIDE_MODULES:
                with contextlib.suppress(AttributeError):  # OWL-ViT has no owlv2.*, OWLv2 no owlvit.*
                    backbone.model.get_submodule(name).requires_grad_(True)

        decoder = {**DEFAULT_DECODER, **cfg.decoder, "input_dim": backbone.hidden_size}
        model = ClipCropModel(
            backbone=portable_backbone_ref(cfg.backbone, self.out_dir, inside=self._save_backbone),
            decoder=decoder,
            selection=cfg.selection,
            training={
                "variant": cfg.variant,
                "text_drop": cfg.text_drop if cfg.uses_text else 0.0,
                "mosaic": cfg.mosaic,
                "seed": cfg.seed,
            },
        )
        if state is not None:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(self.out_dir / "model.safetensors")))
        model.train()
        self.model = model

        data = TrainingData(
            samples,
            cfg,
            world_size=accelerator.num_processes,
            rank=accelerator.process_index,
            mosaic_max_side=backbone.preprocessing.size,
        )
        total = self._total_steps(data.steps_per_epoch)

        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
        if finetune:
            groups.append(
                {
                    "params": [p for p in backbone.model.parameters() if p.requires_grad],
                    "lr": cfg.finetune_backbone_lr,
                }
            )
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule.for_config(cfg, total))
        net = TrainNet(model, backbone, finetune=finetune, config=cfg)
        net, optimizer = accelerator.prepare(net, optimizer)
        criterion = SetCriterion(
            HungarianMatcher(cfg.weight_score, cfg.weight_l1, cfg.weight_giou),
            {"loss_score": cfg.weight_score, "loss_l1": cfg.weight_l1, "loss_giou": cfg.weight_giou},
            redundancy_iou=cfg.redundancy_iou,
        )

        step = 0
        if state is not None:
            step = int(state["step"])
            if len(state["optimizer"]["param_groups"]) != len(optimizer.param_groups):
                raise ParameterError(
                    f"{self.out_dir} was trained with{'out' if finetune else ''} backbone fine-tuning; "
                    f"resume it with{'' if finetune else 'out'} --finetune-backbone-lr"
                )
            runloop.restore_optimizer(optimizer, scheduler, state, LRSchedule.for_config(cfg, total))
            if state.get("scaler") is not None and accelerator.scaler is not None:
                accelerator.scaler.load_state_dict(state["scaler"])
            self._check_resume(state, data)
            rng = state["rng"]
            if accelerator.process_index > 0:
                rank_file = self.out_dir / f"rng_state_{accelerator.process_index}.pt"
                if rank_file.is_file():
                    rng = runloop.load_state(rank_file)
            runloop.set_rng_state(rng)
        start_step = step
        self._log.write(
            {
                "event": "resume" if state is not None else "start",
                "step": step,
                "total_steps": total,
                "samples": len(samples),
                "steps_per_epoch": data.steps_per_epoch,
                "processes": accelerator.num_processes,
                "config": cfg.to_dict(),
            }
        )
        logger.info(
            "training %d samples, %d steps/epoch, steps %d -> %d, %d process(es) on %s",
            len(samples),
            data.steps_per_epoch,
            step,
            total,
            accelerator.num_processes,
            accelerator.device,
        )

        self._net, self._optimizer, self._scheduler, self._criterion = net, optimizer, scheduler, criterion
        self._data = data
        self._cache: dict[int, ImageFeatures] | None = {} if cfg.feature_cache and not finetune else None
        self._text_cache: dict[str, tuple[torch.Tensor, list[str]]] = {}
        loop = runloop.StepLoop.for_config(
            cfg, self._log, self._save, total, on_step=self.on_step, desc="train", show_progress=main
        )
        step, history = loop.run(self._steps, step, resumed=state is not None, started=t_start)
        accelerator.wait_for_everyone()
        if finetune:
            backbone.model.requires_grad_(False)
        model.eval()
        return TrainResult(self.out_dir, step, total, start_step, history, time.perf_counter() - t_start)

    def _check_resume(self, state: dict, data: TrainingData) -> None:
        # the number of data-loading processes does not change the batches either
        runloop.warn_changed_settings(
            state.get("config", {}),
            self.config.to_dict(),
            runloop.RUN_ONLY_SETTINGS | {"num_workers"},
            logger,
        )
        if state.get("world_size") != self.accelerator.num_processes or state.get("num_samples") != len(
            data.samples
        ):
            logger.warning("resuming with a different number of processes or samples: data order changes")

    def _steps(self, step: int, stop_at: int) -> Iterator[dict]:
        """Train from ``step`` to ``stop_at``, one loader per (part of an) epoch; yield each
        step's log record (``step_time`` leaves out the wait for the batch)."""
        data = self._data
        while step < stop_at:
            epoch, in_epoch = divmod(step, data.steps_per_epoch)
            steps_left = min(data.steps_per_epoch - in_epoch, stop_at - step)
            for items in self._loader(epoch, in_epoch, steps_left):
                t0 = time.perf_counter()
                values = self._train_step(items)
                step += 1
                yield runloop.step_record(step, epoch, values, t0)

    def _loader(self, epoch: int, in_epoch: int, steps: int):
        cfg, data = self.config, self._data
        plans: list[ItemPlan] = []
        for s in range(in_epoch, in_epoch + steps):
            for p in data.plans_for_step(epoch, s):
                if self._cache is not None and p.grid == 1 and p.sample_index in self._cache:
                    p = dataclasses.replace(p, load_image=False)
                plans.append(p)
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        return torch.utils.data.DataLoader(
            _StepDataset(data, plans),
            batch_size=cfg.batch_size,
            shuffle=False,
            num_workers=cfg.num_workers,
            collate_fn=_collate,
            generator=generator,
        )

    # ------------------------------------------------------------------ one step
    def _condition(self, item: TrainItem) -> ConditionSpec:
        if item.caption is None:
            return ConditionSpec(None, [])
        key = item.caption
        if key not in self._text_cache:
            texts, labels = condition_texts(key, self.config.selection)
            self._text_cache[key] = (self.backbone.embed_texts(texts), labels)
        embeds, labels = self._text_cache[key]
        best = None
        if item.plan.grid > 1 and item.best_crop is not None:
            best = torch.as_tensor(item.best_crop, dtype=torch.float32)
        return ConditionSpec(embeds.to(self.accelerator.device), labels, best)

    def _encode(self, images: list, sizes: list[tuple[int, int]]) -> ImageFeatures:
        pixel_values = self.backbone.preprocess(images)
        with self.accelerator.autocast():
            return self.backbone.encode(pixel_values, sizes)

    def _features(self, items: list[TrainItem]) -> list[ImageFeatures]:
        """Frozen backbone: per-item features. Cacheable single images are always encoded alone and
        stored before use, so results do not depend on what the cache held."""
        out: list[ImageFeatures | None] = [None] * len(items)
        rest = []
        device = self.accelerator.device
        for i, item in enumerate(items):
            if self._cache is not None and item.plan.grid == 1:
                key = item.plan.sample_index
                if key not in self._cache:
                    feats = self._encode([item.image], [item.size])
                    self._cache[key] = _features_to(feats, "cpu")
                out[i] = _features_to(self._cache[key], device)
            else:
                rest.append(i)
        if rest:
            feats = self._encode([items[i].image for i in rest], [items[i].size for i in rest])
            for j, i in enumerate(rest):
                out[i] = feats[j]
        return out  # type: ignore[return-value]

    def _train_step(self, items: list[TrainItem]) -> dict:
        acc, cfg = self.accelerator, self.config
        device = acc.device
        conditions = [self._condition(it) for it in items]
        targets = [build_target(it.boxes, it.mos, threshold=cfg.positive_mos, device=device) for it in items]
        with acc.autocast():
            if cfg.finetune_backbone_lr is not None:
                pixel_values = self.backbone.preprocess([it.image for it in items])
                outputs, _ = self._net(None, conditions, pixel_values, [it.size for it in items])
            else:
                outputs, _ = self._net(self._features(items), conditions)
        outputs = _float_outputs(outputs, cfg.aux_loss)
        losses = self._criterion(outputs, targets)
        total = self._criterion.total(losses)
        acc.backward(total)
        lrs = [float(g["lr"]) for g in self._optimizer.param_groups]  # the LRs this step uses
        if cfg.grad_clip > 0 and acc.sync_gradients:
            acc.clip_grad_norm_(self._net.parameters(), cfg.grad_clip)
        self._optimizer.step()
        if not acc.optimizer_step_was_skipped:
            self._scheduler.step()
        self._optimizer.zero_grad(set_to_none=True)

        names = sorted(losses)
        values = torch.stack([losses[k].detach().float() for k in names] + [total.detach().float()])
        n = len(items)
        shares = torch.tensor(
            [
                sum(it.plan.drop_text for it in items) / n,
                sum(it.caption is None for it in items) / n,
                sum(it.plan.grid > 1 for it in items) / n,
            ],
            device=device,
        )
        values = acc.reduce(torch.cat([values, shares]), reduction="mean").cpu().tolist()
        record = {k: float(v) for k, v in zip(names, values[: len(names)], strict=True)}
        record["loss"] = float(values[len(names)])
        record["text_drop"], record["unconditioned"], record["mosaic"] = values[len(names) + 1 :]
        record["lr"] = lrs[0]
        if cfg.finetune_backbone_lr is not None:
            record["lr_backbone"] = lrs[1]
        return record

    # ------------------------------------------------------------------ saving
    def _save(self, step: int) -> None:
        """Write the checkpoint at ``step`` into a temporary folder and swap it in."""
        acc = self.accelerator
        tmp = runloop.checkpoint_tmp_dir(self.out_dir, step, create=acc.is_main_process)
        acc.wait_for_everyone()
        rng = runloop.rng_state()
        if acc.process_index > 0:
            torch.save(rng, tmp / f"rng_state_{acc.process_index}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            model = acc.unwrap_model(self._net).model
            from ..modeling.model_card import training_summary

            # the data and settings go into config.json, so the model card states them (even after push_to_hub)
            summary = training_summary(self.config.to_dict(), step, len(self._data.samples))
            stored = model.extra.get("training") or {}  # the run's own entries win; steps and data are now's
            model.extra["training"] = {**summary, **stored, **{k: summary[k] for k in ("steps", "data")}}
            model.save_pretrained(tmp)
            if self._save_backbone:
                self.backbone.model.save_pretrained(tmp / "backbone")
                self.backbone.tokenizer.save_pretrained(tmp / "backbone")
                self.backbone.processor.save_pretrained(tmp / "backbone")
            state = {
                "format": STATE_FORMAT,
                "step": step,
                "epoch": step // self._data.steps_per_epoch,
                "steps_per_epoch": self._data.steps_per_epoch,
                "num_samples": len(self._data.samples),
                "world_size": acc.num_processes,
                "batch_size": self.config.batch_size,
                "optimizer": self._optimizer.state_dict(),
                "scheduler": self._scheduler.state_dict(),
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                "rng": rng,
                "config": self.config.to_dict(),
            }
            torch.save(state, tmp / STATE_FILE)
            runloop.publish_complete(tmp, self.out_dir, step, logger)
        acc.wait_for_everyone()


def _float_outputs(outputs: dict, aux: bool) -> dict:
    out = {"pred_boxes": outputs["pred_boxes"].float(), "pred_logits": outputs["pred_logits"].float()}
    if aux:
        out["aux_outputs"] = [
            {"pred_boxes": a["pred_boxes"].float(), "pred_logits": a["pred_logits"].float()}
            for a in outputs.get("aux_outputs", [])
        ]
    return out


def train(
    config: TrainConfig,
    *,
    samples: Sequence[GaicSample] | None = None,
    backbone: Backbone | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train (or resume) a ClipCrop decoder; see :class:`TrainConfig` and :class:`Trainer`.

    Deterministic on CPU for a given ``config.seed``; a run stopped (``stop_after``) and resumed
    ends with the same weights as one run straight through.

    Raises:
        ParameterError: bad settings, or ``out_dir`` holds a checkpoint and neither ``resume`` nor
            ``overwrite`` is set.
        DatasetError: missing or malformed data, images without a caption (unless ``base``).
        ModelLoadError: the backbone cannot be loaded.
    """
    return Trainer(config, samples=samples, backbone=backbone, on_step=on_step).run()


__all__ = [
    "DEFAULT_DECODER",
    "ItemPlan",
    "LRSchedule",
    "TrainConfig",
    "TrainItem",
    "TrainNet",
    "TrainResult",
    "Trainer",
    "TrainingData",
    "clear_checkpoint",
    "has_checkpoint",
    "publish_checkpoint",
    "recover_checkpoint_dir",
    "train",
]
