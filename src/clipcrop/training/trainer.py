"""Training ClipCrop's crop decoder on GAIC with captions (paper section 3.3): the loop.

Pieces, DETR-style:

* :class:`~clipcrop.training.config.TrainConfig`: every setting of a run (the CLI converts its
  flags into one).
* :class:`~clipcrop.training.planning.TrainingData`: which samples make up each step and how each
  one is augmented, a pure function of the seed and the step number.
* :class:`~clipcrop.training.net.TrainNet`: token selection plus the decoder, the module that trains.
* :class:`Trainer` (this module): the loop; what it writes (checkpoints, ``best/``) and the
  validation at each epoch's end are :class:`~clipcrop.training.outputs.RunOutputs`.
* Each step: the backbone (frozen by default) encodes images, the
  condition (full text and/or keywords, :data:`clipcrop.modeling.model.VARIANTS`) selects tokens,
  the decoder predicts crops relative to ``b_u``, and :class:`clipcrop.training.criterion.SetCriterion`
  scores them against the target tile's annotated crops (Hungarian matching to MOS >= 4 crops,
  L1 + GIoU, score BCE with local-redundancy smoothing, the same on every decoder layer).

Box formats: GAIC crops enter as pixels (:class:`~clipcrop.data.datasets.GaicSample`), are normalised
xyxy in the (mosaic) image for mosaics and selection, and cxcywh normalised in the criterion's
targets, which is what the decoder emits.

Runs on CPU, one GPU or several through HF Accelerate (``accelerate launch -m clipcrop.cli train``
or ``torchrun``; the device and precision: :mod:`clipcrop.training.sizing`, which also sizes a run
without writing anything, :meth:`Trainer.dry_run`). Output folder (``out_dir``):

* the latest checkpoint in ClipCrop's format (``config.json``, ``model.safetensors``, optionally
  ``backbone/``), ``checkpoint.json`` (its step) and ``training_state.pt`` (optimizer, LR
  schedule, step, RNG states), saved every ``save_every`` steps and at each epoch's end; the ones
  before it in ``checkpoints/step-N/`` (``keep_checkpoints``). Each save writes a complete new
  folder beside it and swaps it in with renames, so an interrupted save never leaves a
  half-written checkpoint, and a full disk stops the run naming the intact one
  (:mod:`clipcrop.training.checkpoints`);
* ``best/``: the best checkpoint by the validation at each epoch's end
  (:mod:`clipcrop.training.validation`);
* ``train_log.jsonl`` and ``tensorboard/`` (:mod:`clipcrop.training.reporting`).

The plumbing (folder checks, saving, logging, the loop around the steps) is shared with backbone
fine-tuning in :mod:`clipcrop.training.runloop`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from ..build import build_criterion, build_model
from ..data.datasets import GaicSample, load_gaic
from ..errors import DatasetError, ParameterError
from ..modeling.backbone import Backbone, ImageFeatures
from ..modeling.model import ClipCropModel
from ..modeling.selection import condition_texts
from . import checkpoints, runloop
from .config import LOG_FILE, RUN_FILES, STATE_FILE, TrainConfig, TrainResult
from .criterion import build_target
from .net import ConditionSpec, TrainNet, float_outputs
from .outputs import BEST_DIR, RunOutputs
from .planning import ItemPlan, StepDataset, TrainingData, TrainItem, collate_items
from .reporting import make_reporter
from .schedule import LRSchedule, restore_optimizer
from .sizing import DRY_RUN_STEPS, DryRunReport, StepMeter, start_accelerator
from .validation import GAIC_METRICS, BestTracker, Validator, load_validation_data

logger = logging.getLogger(__name__)

#: OWL-ViT parts that produce image tokens, boxes and class embeddings (what fine-tuning trains);
#: the text tower stays frozen so cached text embeddings stay valid
_IMAGE_SIDE_MODULES = ("owlvit.vision_model", "owlv2.vision_model", "layer_norm", "class_head", "box_head")


class Trainer(RunOutputs):
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
        self.finetune = config.finetune_backbone_lr is not None

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
                    "variant needs one per image (or variant='base')"
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

    def _start(self, *, dry_run: bool = False) -> dict | None:
        """Start Accelerate on the configured device, check ``out_dir`` and return the saved
        state when resuming. A dry run touches no file."""
        from accelerate.utils import set_seed

        cfg = self.config
        self.accelerator = accelerator = start_accelerator(cfg.device, cfg.mixed_precision)
        main = accelerator.is_main_process
        self._log = runloop.StepLog(self.out_dir / LOG_FILE, enabled=main and not dry_run)
        state = None
        if main and not dry_run:
            state = checkpoints.prepare_out_dir(
                self.out_dir, RUN_FILES, resume=cfg.resume, overwrite=cfg.overwrite, log=logger
            )
        accelerator.wait_for_everyone()
        if not main and cfg.resume and not dry_run:
            state = checkpoints.load_state(self.out_dir / STATE_FILE)
        if main and not cfg.resume and not dry_run:
            checkpoints.clear_checkpoint(self.out_dir)
            self._log.restart()
        set_seed(cfg.seed)
        return state

    def _setup(self, state: dict | None) -> tuple[int, int]:
        """Data, backbone, model, optimizer and validation of the run (resumed from ``state``);
        returns the step it starts at and the planned total."""
        cfg, acc = self.config, self.accelerator
        resumed = state is not None
        samples = self._load_samples()
        backbone = self._load_backbone(resumed)
        model = self._build_model(backbone, resumed)
        self._data = TrainingData(
            samples,
            cfg,
            world_size=acc.num_processes,
            rank=acc.process_index,
            mosaic_max_side=backbone.preprocessing.size,
        )
        total = self._total_steps(self._data.steps_per_epoch)
        self._build_optimization(model, backbone, total)
        step = self._restore(state, total) if state is not None else 0
        self._validator, self._best = self._make_validation(model, backbone, resumed)
        self._cache: dict[int, ImageFeatures] | None = {} if cfg.feature_cache and not self.finetune else None
        self._text_cache: dict[str, tuple[torch.Tensor, list[str]]] = {}
        return step, total

    def _load_backbone(self, resumed: bool) -> Backbone:
        """The backbone of the run; a checkpoint with its own (fine-tuned) backbone keeps it,
        frozen or not. With fine-tuning, its image side gets gradients."""
        source = self.config.backbone
        self._save_backbone = self.finetune
        if resumed and (self.out_dir / "backbone").is_dir():
            if self._backbone is not None:
                raise ParameterError(f"{self.out_dir} holds its own backbone; do not pass another one")
            source = str(self.out_dir / "backbone")
            self._save_backbone = True
        backbone = self._backbone or Backbone.from_pretrained(source, device=self.accelerator.device)
        if self.finetune:
            for name in _IMAGE_SIDE_MODULES:
                with contextlib.suppress(AttributeError):  # OWL-ViT has no owlv2.*, OWLv2 no owlvit.*
                    backbone.model.get_submodule(name).requires_grad_(True)
        self.backbone = backbone
        return backbone

    def _build_model(self, backbone: Backbone, resumed: bool) -> ClipCropModel:
        """A fresh decoder of the configured size (seeded), or the resumed checkpoint's weights."""
        cfg = self.config
        model = build_model(
            self._backbone_ref(self.out_dir),
            cfg.decoder,
            cfg.selection,
            input_dim=backbone.hidden_size,
            training={
                "variant": cfg.variant,
                "text_drop": cfg.text_drop if cfg.uses_text else 0.0,
                "mosaic": cfg.mosaic,
                "seed": cfg.seed,
            },
        )
        if resumed:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(self.out_dir / "model.safetensors")))
        model.train()
        self.model = model
        return model

    def _build_optimization(self, model: ClipCropModel, backbone: Backbone, total: int) -> None:
        """AdamW (a second parameter group for the backbone when fine-tuning), the LR schedule,
        the net prepared by Accelerate and the criterion."""
        cfg = self.config
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
        if self.finetune:
            groups.append(
                {
                    "params": [p for p in backbone.model.parameters() if p.requires_grad],
                    "lr": cfg.finetune_backbone_lr,
                }
            )
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self._scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule.for_config(cfg, total))
        net = TrainNet(model, backbone, finetune=self.finetune, config=cfg)
        self._net, self._optimizer = self.accelerator.prepare(net, optimizer)
        self._criterion = build_criterion(cfg)

    def _restore(self, state: dict, total: int) -> int:
        """Optimizer, schedule, scaler and RNG states of the resumed run; returns its step."""
        acc, optimizer = self.accelerator, self._optimizer
        if len(state["optimizer"]["param_groups"]) != len(optimizer.param_groups):
            raise ParameterError(
                # the checkpoint did what this run does not: resume it the way it was trained
                f"{self.out_dir} was trained with{'out' if self.finetune else ''} backbone fine-tuning; "
                f"resume it with{'out' if self.finetune else ''} finetune_backbone_lr"
            )
        restore_optimizer(optimizer, self._scheduler, state, LRSchedule.for_config(self.config, total))
        if state.get("scaler") is not None and acc.scaler is not None:
            acc.scaler.load_state_dict(state["scaler"])
        self._check_resume(state, self._data)
        rng = state["rng"]
        if acc.process_index > 0:
            rank_file = self.out_dir / f"rng_state_{acc.process_index}.pt"
            if rank_file.is_file():
                rng = checkpoints.load_state(rank_file)
        runloop.set_rng_state(rng)
        return int(state["step"])

    def _log_start(self, resumed: bool, step: int, total: int) -> None:
        data, acc = self._data, self.accelerator
        self._log.write(
            {
                "event": "resume" if resumed else "start",
                "step": step,
                "total_steps": total,
                "samples": len(data.samples),
                "steps_per_epoch": data.steps_per_epoch,
                "processes": acc.num_processes,
                "config": self.config.to_dict(),
            }
        )
        logger.info(
            "training %d samples, %d steps/epoch, steps %d -> %d, %d process(es) on %s",
            len(data.samples),
            data.steps_per_epoch,
            step,
            total,
            acc.num_processes,
            acc.device,
        )

    def _make_validation(
        self, model: ClipCropModel, backbone: Backbone, resumed: bool
    ) -> tuple[Validator | None, BestTracker | None]:
        """The validator and best tracker of the main process (None, None elsewhere, or when
        there is nothing to validate on)."""
        cfg = self.config
        if not self.accelerator.is_main_process:
            return None, None
        data = load_validation_data(
            cfg.gaic_root, cfg.val_split, cfg.text_annotations, cfg.uses_text, cfg.val_text, cfg.val_limit
        )
        metric = cfg.chosen_best_metric
        if data is None:
            logger.warning("no validation data: %s/best is not kept", self.out_dir)
            return None, None
        if metric in GAIC_METRICS and not data.gaic:
            raise ParameterError(f"best_metric {metric!r} needs GAIC's validation split (val_split)")
        best = BestTracker.from_folder(metric, self.out_dir / BEST_DIR) if resumed else BestTracker(metric)
        return Validator(data, model, backbone, frozen=not self.finetune), best

    # ------------------------------------------------------------------ run
    def run(self) -> TrainResult:
        """Set the run up (or resume it), train to the end (or ``stop_after``), checkpoint."""
        cfg = self.config
        t_start = time.perf_counter()
        state = self._start()
        resumed = state is not None
        step, total = self._setup(state)
        start_step = step
        self._log_start(resumed, step, total)
        acc = self.accelerator
        self._reporter = make_reporter(
            cfg.report_to,
            self.out_dir,
            enabled=acc.is_main_process,
            purge_step=step + 1 if resumed else None,
            lr_name="decoder",
        )
        loop = runloop.StepLoop.for_config(
            cfg,
            self._log,
            self._save,
            total,
            steps_per_epoch=self._data.steps_per_epoch,
            on_step=self.on_step,
            on_epoch_end=self._on_epoch_end,
            reporter=self._reporter,
            desc="train",
            show_progress=acc.is_main_process,
        )
        try:
            step, history = loop.run(self._steps, step, resumed=resumed, started=t_start)
        finally:
            self._reporter.close()
        acc.wait_for_everyone()
        self._finish()
        return TrainResult(self.out_dir, step, total, start_step, history, time.perf_counter() - t_start)

    def _finish(self) -> None:
        if self.finetune:
            self.backbone.model.requires_grad_(False)
        self.model.eval()

    def dry_run(self, steps: int = DRY_RUN_STEPS) -> DryRunReport:
        """Set the run up and train ``steps`` steps without writing anything (``out_dir`` is not
        touched), measuring the time and memory a step takes on the configured device, and one
        validation; see :mod:`clipcrop.training.sizing`."""
        self._start(dry_run=True)
        meter = StepMeter(self.accelerator.device)
        _, total = self._setup(None)
        records = meter.measure(self._steps(0, steps))
        validation_s = None
        if self._validator is not None:
            t0 = time.perf_counter()
            self._validator()
            validation_s = time.perf_counter() - t0
        self._finish()
        acc, data = self.accelerator, self._data
        return meter.report(
            records,
            samples=len(data.samples),
            steps_per_epoch=data.steps_per_epoch,
            total_steps=total,
            processes=acc.num_processes,
            precision=self.config.mixed_precision,
            validation_s=validation_s,
            validation_samples=self._validator.size if self._validator is not None else 0,
        )

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
            StepDataset(data, plans),
            batch_size=cfg.batch_size,
            shuffle=False,
            num_workers=cfg.num_workers,
            collate_fn=collate_items,
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
                    self._cache[key] = feats.to("cpu")
                out[i] = self._cache[key].to(device)
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
        outputs = float_outputs(outputs, cfg.aux_loss)
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


__all__ = ["Trainer", "train"]
