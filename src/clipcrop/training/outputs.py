"""What a decoder run writes besides its log: checkpoints, ``best/``, and the validation that
chooses it (a part of :class:`clipcrop.training.trainer.Trainer`, kept apart from the loop).

* :meth:`RunOutputs._save`: the checkpoint of a step, written into a temporary folder and swapped
  in (:mod:`clipcrop.training.checkpoints`: history, full disk), with ``training_state.pt``
  (optimizer, LR schedule, step, RNG states of every process: what an exact resume needs).
* :meth:`RunOutputs._on_epoch_end`: validation (:mod:`clipcrop.training.validation`) on the
  main process, logged and reported, every RNG restored afterwards; ``best/`` rewritten when the
  chosen metric improved.

Box formats do not occur here: the model's own save writes its config and weights.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from ..modeling.model import portable_backbone_ref
from . import checkpoints, runloop
from .config import STATE_FILE, STATE_FORMAT
from .validation import BEST_FILE

logger = logging.getLogger("clipcrop.training.trainer")

#: the folder (inside ``out_dir``) of the best checkpoint by the validation metric
BEST_DIR = "best"


class RunOutputs:
    """Saving and validation of a decoder run; mixed into the trainer, whose setup provides
    ``config``, ``out_dir``, ``accelerator``, ``backbone``, ``_net``, ``_optimizer``,
    ``_scheduler``, ``_data``, ``_log``, ``_reporter``, ``_validator``, ``_best`` and
    ``_save_backbone``."""

    config: Any
    out_dir: Path
    accelerator: Any
    backbone: Any
    _net: Any
    _optimizer: Any
    _scheduler: Any
    _data: Any
    _log: Any
    _reporter: Any
    _validator: Any
    _best: Any
    _save_backbone: bool

    # ------------------------------------------------------------------ validation
    def _on_epoch_end(self, step: int) -> None:
        """Validate (main process), log and report it, and write ``best/`` when it improved.
        Every RNG is restored afterwards, so validating changes nothing the training draws."""
        if self._validator is not None and self._best is not None:
            rng = runloop.rng_state()
            try:
                result = self._validator()
            finally:
                runloop.set_rng_state(rng)
            best = self._best
            improved = best.update(result.metrics, step)
            self._log.write(
                {
                    "event": "validation",
                    "step": step,
                    "epoch": (step - 1) // self._data.steps_per_epoch,
                    "metrics": result.metrics,
                    "best_metric": best.metric,
                    "best_value": best.value,
                    "best_step": best.step,
                    "improved": improved,
                    "elapsed_s": result.elapsed_s,
                }
            )
            logger.info(
                "step %d validation: %s (best %s %.4f at step %s)",
                step,
                ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if "num_samples" not in k),
                best.metric,
                best.value,
                best.step,
            )
            self._reporter.validation(step, result.metrics, result.previews)
            if improved:
                self._write_best(step, result.metrics)
        self.accelerator.wait_for_everyone()

    def _write_best(self, step: int, metrics: dict[str, float]) -> None:
        """``out_dir/best/``: the model of ``step`` (a checkpoint ``crop``/``evaluate`` load like
        any other) and ``best.json``, written beside and swapped in."""
        best_dir = self.out_dir / BEST_DIR
        tmp = self.out_dir / f".{BEST_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with checkpoints.disk_full_guard(tmp, best_dir, step):
            self._write_model(tmp, step, self._backbone_ref(best_dir))
            checkpoints.write_step(tmp, step)
            (tmp / BEST_FILE).write_text(json.dumps(self._best.record(metrics), indent=1) + "\n")
            checkpoints.replace_folder(tmp, best_dir)
        logger.info("best checkpoint so far (step %d) written to %s", step, best_dir)

    # ------------------------------------------------------------------ saving
    def _save(self, step: int) -> None:
        """Write the checkpoint at ``step`` into a temporary folder and swap it in (the older one
        joins the history, :mod:`clipcrop.training.checkpoints`)."""
        acc = self.accelerator
        tmp = checkpoints.checkpoint_tmp_dir(self.out_dir, step, create=acc.is_main_process)
        acc.wait_for_everyone()
        rng = runloop.rng_state()
        if acc.process_index > 0:
            torch.save(rng, tmp / f"rng_state_{acc.process_index}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            with checkpoints.disk_full_guard(tmp, self.out_dir, step):
                self._write_model(tmp, step, self._backbone_ref(self.out_dir))
                torch.save(self._run_state(step, rng), tmp / STATE_FILE)
                checkpoints.publish_complete(
                    tmp, self.out_dir, step, logger, keep=self.config.keep_checkpoints
                )
        acc.wait_for_everyone()

    def _backbone_ref(self, folder: Path) -> str:
        """How a checkpoint written to ``folder`` names the backbone (portable, see the model)."""
        return portable_backbone_ref(self.config.backbone, folder, inside=self._save_backbone)

    def _write_model(self, folder: Path, step: int, backbone_ref: str) -> None:
        """The model files of the checkpoint of ``step`` in ``folder``: ``config.json`` (with the
        run's data and settings, so the model card states them even after ``push_to_hub``),
        weights, card, and the backbone when the checkpoint holds its own."""
        from ..modeling.model_card import training_summary

        model = self.accelerator.unwrap_model(self._net).model
        summary = training_summary(self.config.to_dict(), step, len(self._data.samples))
        stored = model.extra.get("training") or {}  # the run's own entries win; steps and data are now's
        model.extra["training"] = {**summary, **stored, **{k: summary[k] for k in ("steps", "data")}}
        own_ref, model.backbone_name = model.backbone_name, backbone_ref
        try:
            model.save_pretrained(folder)
        finally:
            model.backbone_name = own_ref
        if self._save_backbone:
            self.backbone.model.save_pretrained(folder / "backbone")
            self.backbone.tokenizer.save_pretrained(folder / "backbone")
            self.backbone.processor.save_pretrained(folder / "backbone")

    def _run_state(self, step: int, rng: dict) -> dict:
        """What ``training_state.pt`` holds: everything an exact continuation needs."""
        acc, data = self.accelerator, self._data
        return {
            "format": STATE_FORMAT,
            "step": step,
            "epoch": step // data.steps_per_epoch,
            "steps_per_epoch": data.steps_per_epoch,
            "num_samples": len(data.samples),
            "world_size": acc.num_processes,
            "batch_size": self.config.batch_size,
            "optimizer": self._optimizer.state_dict(),
            "scheduler": self._scheduler.state_dict(),
            "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
            "rng": rng,
            "config": self.config.to_dict(),
        }


__all__ = ["BEST_DIR", "RunOutputs"]
