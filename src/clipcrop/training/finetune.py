"""Fine-tuning OWL-ViT for open-vocabulary detection on your own data (``clipcrop finetune-backbone``): the loop.

ClipCrop selects image tokens by comparing their class embeddings with query embeddings, so a
backbone that detects *your* objects crops them better. This fine-tunes an OWL-ViT/OWLv2
checkpoint (or trains a small random one, :func:`clipcrop.synthetic.random_models.make_random_owlvit`,
from scratch) the way OWL-ViT itself was trained, DETR-style:

* **Data**: a JSON-lines detection manifest (:mod:`clipcrop.data.detection`).
* **Batches**: flips, zoom windows and negative queries (:mod:`clipcrop.training.finetune_data`).
* **Loss**: Hungarian matching, focal loss on token x query logits, L1 + GIoU on the matched
  tokens' boxes (:mod:`clipcrop.training.detection_loss`); fresh heads for a random checkpoint
  (:mod:`clipcrop.training.detection_heads`).
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
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from ..build import build_detection_loss
from ..data.detection import DetectionSample, load_detection_manifest
from ..modeling.backbone import Backbone
from . import checkpoints, runloop
from .detection_heads import heads_saturated, init_detection_heads
from .finetune_config import LOG_FILE, RUN_FILES, STATE_FILE, STATE_FORMAT, FinetuneConfig, FinetuneResult
from .finetune_data import DetectionBatches
from .reporting import make_reporter
from .schedule import LRSchedule, restore_optimizer

logger = logging.getLogger(__name__)

#: files of the input folder that are *not* copied into the output (weights, config, our state)
_NOT_COPIED = re.compile(r"^(config\.json|.*\.safetensors|.*\.bin|.*\.index\.json|README\.md|\..*)$")


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
        samples = list(samples) if samples is not None else load_detection_manifest(config.data)
        if config.max_samples is not None:
            samples = samples[: config.max_samples]
        self.data = DetectionBatches(samples, config)
        self.samples = self.data.samples
        self.on_step = on_step

    @property
    def steps_per_epoch(self) -> int:
        return self.data.steps_per_epoch

    def total_steps(self) -> int:
        cfg = self.config
        if cfg.max_steps is not None:
            return int(cfg.max_steps)
        return int(cfg.epochs or FinetuneConfig.DEFAULT_EPOCHS) * self.steps_per_epoch

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

    def _load_backbone(self, resumed: bool) -> Backbone:
        """The checkpoint to train: ``out_dir``'s when resuming; a fresh run re-initialises the
        detection heads when asked, or (``auto``) when they saturate (a random checkpoint)."""
        cfg = self.config
        self.source = str(self.out_dir) if resumed else cfg.backbone
        backbone = Backbone.from_pretrained(self.source, device=self._device())
        self.backbone = backbone
        self._side = backbone.preprocessing.size
        if resumed:
            return backbone
        torch.manual_seed(cfg.seed)  # fresh heads (below) are a function of the seed too
        if cfg.reinit_heads != "never":
            images = self.data.batch(0, self._side).images
            if cfg.reinit_heads == "always" or heads_saturated(backbone.model, backbone.preprocess(images)):
                logger.warning(
                    "detection heads re-initialised (%s)",
                    "asked"
                    if cfg.reinit_heads == "always"
                    else "the checkpoint's box head saturates: a randomly initialised model",
                )
                init_detection_heads(backbone.model)
        return backbone

    def _build_optimization(self, model: nn.Module, total: int) -> None:
        cfg = self.config
        self._params = self._set_trainable(model)
        model.train()
        self._optimizer = torch.optim.AdamW(self._params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self._scheduler = torch.optim.lr_scheduler.LambdaLR(
            self._optimizer, LRSchedule.for_config(cfg, total)
        )
        self._loss_fn = build_detection_loss(cfg)

    def _log_start(self, resumed: bool, step: int, total: int) -> None:
        self._log.write(
            {
                "event": "resume" if resumed else "start",
                "step": step,
                "total_steps": total,
                "samples": len(self.samples),
                "classes": len(self.data.vocab),
                "steps_per_epoch": self.steps_per_epoch,
                "config": self.config.to_dict(),
            }
        )
        logger.info(
            "fine-tuning on %d images (%d classes), steps %d -> %d",
            len(self.samples),
            len(self.data.vocab),
            step,
            total,
        )

    # ------------------------------------------------------------------ run
    def run(self) -> FinetuneResult:
        """Set the run up (or resume it), train to the end (or ``stop_after``), checkpoint."""
        cfg = self.config
        t_start = time.perf_counter()
        state = checkpoints.prepare_out_dir(
            self.out_dir, RUN_FILES, resume=cfg.resume, overwrite=cfg.overwrite, log=logger
        )
        resumed = state is not None
        self._log = runloop.StepLog(self.out_dir / LOG_FILE)
        if not resumed:
            self._log.restart()
        model = self._load_backbone(resumed).model
        total = self.total_steps()
        self._build_optimization(model, total)
        step = 0
        if state is not None:
            step = int(state["step"])
            restore_optimizer(self._optimizer, self._scheduler, state, LRSchedule.for_config(cfg, total))
            self._check_resume(state)
            runloop.set_rng_state(state["rng"])
        start_step = step
        self._log_start(resumed, step, total)
        reporter = make_reporter(
            cfg.report_to,
            self.out_dir,
            enabled=True,
            purge_step=step + 1 if resumed else None,
            lr_name="backbone",
        )
        loop = runloop.StepLoop.for_config(
            cfg,
            self._log,
            self._save,
            total,
            steps_per_epoch=self.steps_per_epoch,
            on_step=self.on_step,
            reporter=reporter,
            desc="finetune",
        )
        try:
            step, history = loop.run(self._steps, step, resumed=resumed, started=t_start)
        finally:
            reporter.close()
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
        batch = self.data.batch(step, self._side)
        images, texts, targets = batch.images, batch.texts, batch.targets
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
        """Write the checkpoint at ``step`` into a temporary folder and swap it in (the older one
        joins the history, :mod:`clipcrop.training.checkpoints`)."""
        tmp = checkpoints.checkpoint_tmp_dir(self.out_dir, step)
        with checkpoints.disk_full_guard(tmp, self.out_dir, step):
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
            checkpoints.publish_complete(tmp, self.out_dir, step, logger, keep=self.config.keep_checkpoints)


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


__all__ = ["Finetuner", "finetune_backbone"]
