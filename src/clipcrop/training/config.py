"""The settings of a decoder training run (:class:`TrainConfig`) and what a run returns.

The CLI (:mod:`clipcrop.cli.train`) converts its flags into one :class:`TrainConfig`; everything
below the CLI reads only the config. The names of the files a run keeps in its output folder
live here too, since the trainer, the tests and the tools that read a run all need them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import ParameterError
from ..modeling.backbone import DEFAULT_BACKBONE
from ..modeling.decoder_config import DecoderConfig
from ..modeling.selection_settings import PROMPT_TEMPLATE, VARIANTS
from . import checkpoints, runloop
from .reporting import REPORT_TO
from .runloop import DEFAULT_KEEP_CHECKPOINTS, DEFAULT_SAVE_EVERY, RunResult
from .schedule import LR_SCHEDULES
from .sizing import check_device
from .validation import check_validation_settings, default_best_metric

STATE_FILE = "training_state.pt"
LOG_FILE = "train_log.jsonl"
STATE_FORMAT = "clipcrop-train/1"
RUN_FILES = checkpoints.RunFiles(STATE_FILE, LOG_FILE, STATE_FORMAT, kind="training", rerun="train")
#: decoder sizes of a default run (the paper's M = 90 queries); ``input_dim`` comes from the backbone
DEFAULT_DECODER = {k: v for k, v in DecoderConfig().to_dict().items() if k != "input_dim"}


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Attributes:
        gaic_root: GAIC folder (``images/<split>``, ``annotations/<split>``); may be None when
            :func:`train` gets ``samples``.
        text_annotations: folder of the caption files (``train.json`` ...); required unless
            ``variant == "base"``.
        backbone: Hub id or folder of the OWL-ViT/OWLv2 weights.
        out_dir: checkpoint folder (what it holds: :mod:`clipcrop.training.trainer`).
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
        mixed_precision: ``no``, ``bf16`` or ``fp16`` (fp16: CUDA only): Accelerate's autocast.
        device: ``auto`` (a CUDA GPU when there is one; each process its own under
            ``accelerate launch``/``torchrun``), ``cpu``, ``cuda`` or ``cuda:N``
            (:func:`clipcrop.training.sizing.start_accelerator`).
        save_every: checkpoint every this many steps (None: not by steps); always at the end.
        save_each_epoch: also checkpoint at the end of every epoch.
        keep_checkpoints: how many checkpoints to keep: the latest in ``out_dir`` and the
            ones before it in ``out_dir/checkpoints/step-N/``
            (:mod:`clipcrop.training.checkpoints`).
        val_split: GAIC split validated at every epoch's end (and the run's); a missing split
            folder is skipped with a warning; None: no GAIC validation.
        val_text: a TextCrop-format folder (``annotations.json``) or manifest also validated on
            (``text_iou_mean``, ``text_iou_max``).
        val_limit: validate on the first N samples of each set only.
        best_metric: the metric ``out_dir/best/`` is chosen by (higher is better; one of
            :data:`clipcrop.training.validation.BEST_METRICS`); None: ``text_iou_mean`` with
            ``val_text``, else ``acc1_5``.
        report_to: ``tensorboard`` (event files in ``out_dir/tensorboard``) or ``none``.
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
    save_every: int | None = DEFAULT_SAVE_EVERY
    save_each_epoch: bool = True
    keep_checkpoints: int = DEFAULT_KEEP_CHECKPOINTS
    val_split: str | None = "val"
    val_text: str | None = None
    val_limit: int | None = None
    best_metric: str | None = None
    report_to: str = "tensorboard"
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
                "(text_annotations), or use variant='base'"
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
        check_device(self.device)
        if self.num_workers < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ParameterError("num_workers, warmup_steps and grad_clip must not be negative")
        unknown = set(self.decoder) - set(DecoderConfig.__dataclass_fields__)
        if unknown:
            raise ParameterError(f"unknown decoder settings: {', '.join(sorted(unknown))}")
        if self.resume and self.overwrite:
            raise ParameterError("resume and overwrite exclude each other")
        if self.report_to not in REPORT_TO:
            raise ParameterError(f"report_to {self.report_to!r} is not one of {', '.join(REPORT_TO)}")
        check_validation_settings(self.best_metric, self.val_text, self.val_limit)

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
    def chosen_best_metric(self) -> str:
        """The metric ``best/`` is chosen by (``best_metric`` or its default)."""
        return self.best_metric or default_best_metric(self.val_text)

    @property
    def uses_text(self) -> bool:
        return bool(VARIANTS[self.variant]["use_text"])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult(RunResult):
    """What :func:`train` did (fields: :class:`~clipcrop.training.runloop.RunResult`); ``history`` is what
    ``train_log.jsonl`` got."""


__all__ = [
    "DEFAULT_DECODER",
    "LOG_FILE",
    "RUN_FILES",
    "STATE_FILE",
    "STATE_FORMAT",
    "TrainConfig",
    "TrainResult",
]
