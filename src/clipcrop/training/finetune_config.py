"""The settings of a backbone fine-tuning run (:class:`FinetuneConfig`) and what a run returns.

``clipcrop finetune-backbone`` (:mod:`clipcrop.cli.finetune`) converts its flags into one; the
names of the files a run keeps in its output folder live here too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import ParameterError
from . import checkpoints, runloop
from .reporting import REPORT_TO
from .runloop import DEFAULT_KEEP_CHECKPOINTS, DEFAULT_SAVE_EVERY, RunResult
from .schedule import LR_SCHEDULES

STATE_FILE = "finetune_state.pt"
LOG_FILE = "finetune_log.jsonl"
STATE_FORMAT = "clipcrop-finetune/1"
RUN_FILES = checkpoints.RunFiles(STATE_FILE, LOG_FILE, STATE_FORMAT, kind="fine-tuning", rerun="run")
REINIT_CHOICES = ("auto", "always", "never")


@dataclass
class FinetuneConfig:
    """Everything that defines a fine-tuning run.

    Attributes:
        data: the detection manifest (JSON lines, :mod:`clipcrop.data.detection`).
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
        save_every: checkpoint every this many steps (None: not by steps); always at the end.
        save_each_epoch: also checkpoint at the end of every epoch.
        keep_checkpoints: how many checkpoints to keep: the latest in ``out_dir`` and the
            ones before it in ``out_dir/checkpoints/step-N/``
            (:mod:`clipcrop.training.checkpoints`).
        report_to: ``tensorboard`` (losses and learning rate in ``out_dir/tensorboard``) or ``none``.
        resume: continue from ``out_dir``'s checkpoint.
        overwrite: replace an existing checkpoint in ``out_dir`` (otherwise an error).
        seed: data order, flips, negatives.
        max_samples: train on the first N images only.
        cache_images: keep decoded images (reduced to the backbone's input size) in memory.
        reinit_heads: ``auto``, ``always`` or ``never``: start from fresh detection heads
            (:func:`clipcrop.training.detection_heads.init_detection_heads`); ``auto`` does when the checkpoint's box head saturates
            (:func:`~clipcrop.training.detection_heads.heads_saturated`: a randomly initialised checkpoint), never on resume.
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
    save_every: int | None = DEFAULT_SAVE_EVERY
    save_each_epoch: bool = True
    keep_checkpoints: int = DEFAULT_KEEP_CHECKPOINTS
    report_to: str = "tensorboard"
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
        if self.report_to not in REPORT_TO:
            raise ParameterError(f"report_to {self.report_to!r} is not one of {', '.join(REPORT_TO)}")
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


__all__ = [
    "LOG_FILE",
    "REINIT_CHOICES",
    "RUN_FILES",
    "STATE_FILE",
    "STATE_FORMAT",
    "FinetuneConfig",
    "FinetuneResult",
]
