"""The loop of a checkpointed, resumable training run, shared by both of ClipCrop's trainers.

:mod:`clipcrop.training.trainer` (the crop decoder) and :mod:`clipcrop.training.finetune` (the
OWL-ViT backbone) differ in what a step computes and in what a checkpoint holds, not in how a run
is driven. That part lives here and beside it, once, so that the two commands cannot drift apart
in what users rely on:

* settings both configs spell alike (:func:`check_run_length`, :func:`warn_changed_settings`);
* the output folder and checkpoint publishing (:mod:`clipcrop.training.checkpoints`) and the LR
  schedule (:mod:`clipcrop.training.schedule`);
* the RNG states an exact continuation needs (:func:`rng_state`, :func:`set_rng_state`);
* the loop around the steps (:class:`StepLoop`): the JSON-lines log (:class:`StepLog`), the
  progress bar (:func:`progress_bar`), ``on_step``, the save cadence and the final save; what a
  call did (:class:`RunResult`).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ParameterError

logger = logging.getLogger(__name__)

#: default save cadence in steps (and at each epoch end): a run that dies loses at most this much
DEFAULT_SAVE_EVERY = 500
#: default number of checkpoints kept (the latest plus the ones before it)
DEFAULT_KEEP_CHECKPOINTS = 3
#: settings that say how long a run goes, where it writes and how it reports, not what it
#: computes: resuming with other values is still an exact continuation
RUN_ONLY_SETTINGS = frozenset(
    {
        "resume",
        "overwrite",
        "max_steps",
        "epochs",
        "stop_after",
        "save_every",
        "save_each_epoch",
        "keep_checkpoints",
        "progress",
        "out_dir",
        "report_to",
        "val_split",
        "val_text",
        "val_limit",
        "best_metric",
    }
)


# ----------------------------------------------------------------------------- settings


def check_run_length(config: Any) -> None:
    """Raise :class:`ParameterError` unless the run's length and batch settings are usable.

    ``config`` is a :class:`~clipcrop.training.config.TrainConfig` or
    :class:`~clipcrop.training.finetune_config.FinetuneConfig`: both spell these settings the same way, so both
    refuse them with the same words.
    """
    for name in ("epochs", "max_steps", "stop_after", "save_every", "max_samples", "keep_checkpoints"):
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or int(value) < 1):
            raise ParameterError(f"{name} must be a positive whole number, got {value!r}")
    if config.batch_size < 1:
        raise ParameterError(f"batch_size must be at least 1, got {config.batch_size}")


def warn_changed_settings(
    saved: dict, now: dict, ignore: set[str] | frozenset[str], log: logging.Logger
) -> None:
    """Warn when a resumed run computes differently from the run that saved ``saved``.

    Settings in ``ignore`` (e.g. :data:`RUN_ONLY_SETTINGS`) and settings the saved run did not
    have yet do not count; the run goes on either way, since changing e.g. the learning rate on
    purpose is legitimate, but the user should know the result is no exact continuation.
    """
    changed = sorted(k for k in now if k not in ignore and k in saved and saved[k] != now[k])
    if changed:
        log.warning("resuming with changed settings (%s): not an exact continuation", ", ".join(changed))


# ----------------------------------------------------------------------------- RNG states


def rng_state() -> dict:
    """Python, numpy and torch RNG states, as plain types and tensors (``weights_only`` loadable)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *[float(v) for v in np_state[2:]]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved, so a resumed run draws what the straight run drew."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- the loop


@dataclass
class RunResult:
    """What one call of a run did (the base of ``TrainResult`` and ``FinetuneResult``).

    Attributes:
        out_dir: the checkpoint folder.
        step: the last completed step (the checkpoint's).
        total_steps: the run's planned length.
        start_step: where this call started (> 0 when resumed).
        history: one dict per step of this call (what the log got).
        elapsed_s: wall time of this call.
    """

    out_dir: Path
    step: int
    total_steps: int
    start_step: int
    history: list[dict]
    elapsed_s: float

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps


class StepLog:
    """The run's JSON-lines log: one object per event, each stamped with the wall time.

    Appended to, never rewritten, so a resumed run continues the log of the run it resumes.
    With several processes only one (``enabled``) writes.
    """

    def __init__(self, path: Path, *, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled

    def restart(self) -> None:
        """Start an empty log: a fresh run must not continue an overwritten run's history."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({**record, "time": time.time()}, default=str) + "\n")


def step_record(step: int, epoch: int, values: dict, started: float) -> dict:
    """The log record of a finished step: the same leading and trailing fields in every run's log
    (``step_time`` from ``started``, a ``time.perf_counter()`` reading), the step's values between."""
    return {
        "event": "step",
        "step": step,
        "epoch": epoch,
        **values,
        "step_time": time.perf_counter() - started,
    }


def progress_bar(enabled: bool | None, total: int, initial: int, desc: str) -> Any:
    """A tqdm bar on stderr, or None; ``enabled=None``: only when stderr is a terminal, so logs
    and pipes do not fill with carriage-return updates."""
    if enabled is None:
        enabled = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)


@dataclass
class StepLoop:
    """Drives a run's steps and does what every step and the run's end need around them.

    A run supplies its steps as log records (see :meth:`run`); the loop logs each, keeps the
    history, calls ``on_step``, moves the bar and checkpoints every ``save_every`` steps and at
    the end of every epoch (``save_each_epoch``). At an epoch's end, and at the last step of a
    run that finishes, ``on_epoch_end`` runs first (validation), so that the checkpoint saved
    right after holds what it found. At the end the loop checkpoints unless the last step was
    just saved, and logs the ``end`` event.

    Attributes:
        log: where the records go.
        save: writes and publishes the checkpoint of a step (the loop logs the ``checkpoint`` event).
        total: the planned length (the LR schedule's), for ``stop_at`` and the bar.
        stop_after: stop early at this step (a checkpoint; ``resume`` continues exactly).
        save_every: checkpoint cadence in steps; None: no cadence in steps.
        steps_per_epoch: the epoch length, for ``save_each_epoch`` and ``on_epoch_end``.
        save_each_epoch: also checkpoint at the end of every epoch.
        on_step: called with each step's record.
        on_epoch_end: called with the step that ends an epoch (or the run).
        reporter: gets each step's record too (:mod:`clipcrop.training.reporting`).
        progress: :func:`progress_bar`'s ``enabled``.
        desc: the bar's label.
    """

    log: StepLog
    save: Callable[[int], None]
    total: int
    stop_after: int | None = None
    save_every: int | None = None
    steps_per_epoch: int | None = None
    save_each_epoch: bool = False
    on_step: Callable[[dict], None] | None = None
    on_epoch_end: Callable[[int], None] | None = None
    reporter: Any = None
    progress: bool | None = None
    desc: str = "train"

    @classmethod
    def for_config(
        cls,
        config: Any,
        log: StepLog,
        save: Callable[[int], None],
        total: int,
        *,
        steps_per_epoch: int,
        on_step: Callable[[dict], None] | None,
        on_epoch_end: Callable[[int], None] | None = None,
        reporter: Any = None,
        desc: str,
        show_progress: bool = True,
    ) -> StepLoop:
        """The loop of a run set up by ``config`` (a ``TrainConfig`` or ``FinetuneConfig``: both
        name ``stop_after``, ``save_every``, ``save_each_epoch`` and ``progress`` alike).
        ``show_progress=False`` hides the bar whatever the config says (a process other than
        the main one)."""
        return cls(
            log,
            save,
            total,
            stop_after=config.stop_after,
            save_every=config.save_every,
            steps_per_epoch=steps_per_epoch,
            save_each_epoch=config.save_each_epoch,
            on_step=on_step,
            on_epoch_end=on_epoch_end,
            reporter=reporter,
            progress=config.progress if show_progress else False,
            desc=desc,
        )

    @property
    def stop_at(self) -> int:
        """The step this call ends at."""
        return min(self.total, self.stop_after) if self.stop_after is not None else self.total

    def epoch_ends(self, step: int) -> bool:
        """Whether ``step`` completes an epoch (or the whole run)."""
        return step == self.total or bool(self.steps_per_epoch and step % self.steps_per_epoch == 0)

    def save_due(self, step: int) -> bool:
        """Whether the cadence asks for a checkpoint after ``step``."""
        if self.save_every and step % self.save_every == 0:
            return True
        return self.save_each_epoch and bool(self.steps_per_epoch) and step % self.steps_per_epoch == 0

    def run(
        self,
        steps: Callable[[int, int], Iterable[dict]],
        start: int,
        *,
        resumed: bool,
        started: float,
    ) -> tuple[int, list[dict]]:
        """Run ``steps(start, stop_at)``, which trains and yields one record per step (with its
        ``step`` number, see :func:`step_record`), and return the last step and the records.

        Args:
            steps: trains steps ``start + 1`` to ``stop_at``, yielding after each; the loop
                logs, reports, validates and saves between two steps.
            start: the step the run is at (0, or the resumed checkpoint's).
            resumed: the checkpoint of ``start`` exists already (no save when nothing ran).
            started: ``time.perf_counter()`` at the start of the call, for ``elapsed_s``.
        """
        stop_at = self.stop_at
        step = start
        history: list[dict] = []
        bar = progress_bar(self.progress, self.total, start, self.desc)
        last_saved = start if resumed else -1
        try:
            for record in steps(start, stop_at):
                step = record["step"]
                self._report(record, history, bar)
                if self.on_epoch_end is not None and self.epoch_ends(step):
                    self.on_epoch_end(step)
                if step < stop_at and self.save_due(step):
                    self._checkpoint(step)
                    last_saved = step
        finally:
            if bar is not None:
                bar.close()
        if last_saved != step:
            self._checkpoint(step)
        self.log.write({"event": "end", "step": step, "elapsed_s": time.perf_counter() - started})
        return step, history

    def _report(self, record: dict, history: list[dict], bar: Any) -> None:
        record["total_steps"] = self.total  # for readers of the log and on_step (an ETA)
        self.log.write(record)
        history.append(record)
        if self.reporter is not None:
            self.reporter.step(record)
        if self.on_step is not None:
            self.on_step(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")

    def _checkpoint(self, step: int) -> None:
        self.save(step)
        self.log.write({"event": "checkpoint", "step": step})


__all__ = [
    "DEFAULT_KEEP_CHECKPOINTS",
    "DEFAULT_SAVE_EVERY",
    "RUN_ONLY_SETTINGS",
    "RunResult",
    "StepLog",
    "StepLoop",
    "check_run_length",
    "progress_bar",
    "rng_state",
    "set_rng_state",
    "step_record",
    "warn_changed_settings",
]
