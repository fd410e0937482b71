"""The plumbing of a checkpointed, resumable training run, shared by both of ClipCrop's trainers.

:mod:`clipcrop.training.trainer` (the crop decoder) and :mod:`clipcrop.training.finetune` (the OWL-ViT backbone)
differ in what a step computes and in what a checkpoint holds, not in how a run is driven. That
part lives here, once, so that the two commands cannot drift apart in what users rely on: when an
output folder is refused or reused, how a checkpoint is published, and that ``resume`` continues
bit-exactly.

* Output folder: :func:`prepare_out_dir` refuses to replace a checkpoint unless told and reads the
  saved state on resume; :func:`recover_checkpoint_dir` repairs a save that a crash interrupted.
* Checkpoints are written into a temporary sibling (:func:`checkpoint_tmp_dir`) and swapped in
  (:func:`publish_complete`, :func:`publish_checkpoint`), with the RNG states
  (:func:`rng_state`, :func:`set_rng_state`) and the optimizer and LR schedule
  (:class:`LRSchedule`, :func:`restore_optimizer`) that an exact continuation needs.
* The loop around the steps (:class:`StepLoop`): the JSON-lines log (:class:`StepLog`), the
  progress bar (:func:`progress_bar`), ``on_step``, the save cadence and the final save; what a
  call did (:class:`RunResult`).

Helpers that warn take the caller's logger, so messages keep naming the run that wrote them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ParameterError
from ..io.atomic_files import apply_umask

logger = logging.getLogger(__name__)

LR_SCHEDULES = ("constant", "cosine", "linear")
#: settings that say how long a run goes, where it writes and how it reports, not what it
#: computes: resuming with other values is still an exact continuation
RUN_ONLY_SETTINGS = frozenset(
    {"resume", "overwrite", "max_steps", "epochs", "stop_after", "save_every", "progress", "out_dir"}
)
#: written last into a temporary checkpoint folder: a folder without it is a half-written save
_COMPLETE = ".complete"
#: names in a checkpoint folder that belong to the checkpoint (replaced as a whole at each save).
#: ``training_state.pt`` is :data:`clipcrop.training.trainer.STATE_FILE`; fine-tuning's state file is not
#: listed, as it never was: every save writes it anew, and listing it would change which stray
#: files of a reused folder survive a save.
_CHECKPOINT_NAMES = ("config.json", "model.safetensors", "README.md", "training_state.pt", "backbone")


# ----------------------------------------------------------------------------- settings


def check_run_length(config: Any) -> None:
    """Raise :class:`ParameterError` unless the run's length and batch settings are usable.

    ``config`` is a :class:`~clipcrop.training.trainer.TrainConfig` or
    :class:`~clipcrop.training.finetune.FinetuneConfig`: both spell these settings the same way, so both
    refuse them with the same words.
    """
    for name in ("epochs", "max_steps", "stop_after", "save_every", "max_samples"):
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


# ----------------------------------------------------------------------------- output folder


@dataclass(frozen=True)
class RunFiles:
    """What one kind of run keeps in its output folder, and how its messages name it.

    Attributes:
        state_file: optimizer, schedule, step and RNG states (``torch.save``).
        log_file: the JSON-lines log.
        state_format: the ``format`` value of the state, so one kind never resumes the other's.
        kind: the run in messages ("not a ClipCrop <kind> state").
        rerun: the verb of the hint after a failed resume ("<rerun> without --resume first").
    """

    state_file: str
    log_file: str
    state_format: str
    kind: str
    rerun: str


def load_state(path: Path) -> dict:
    """Read a saved run state on the CPU; ``weights_only`` since the folder may not be the user's own."""
    return torch.load(path, map_location="cpu", weights_only=True)


def holds_checkpoint(out_dir: Path, state_file: str) -> bool:
    """Does ``out_dir`` hold a model (``config.json``) or a run state named ``state_file``?"""
    return (out_dir / "config.json").is_file() or (out_dir / state_file).is_file()


def prepare_out_dir(
    out_dir: Path, files: RunFiles, *, resume: bool, overwrite: bool, log: logging.Logger
) -> dict | None:
    """Check the output folder against resume/overwrite; return the saved state when resuming.

    An interrupted save is repaired first, so that both the check and a resume see the last
    complete checkpoint. Nothing is deleted here: a fresh run clears what it replaces itself.

    Raises:
        ParameterError: the folder is a file; ``resume`` without a state of this kind; a checkpoint
            there without ``resume`` or ``overwrite``.
    """
    recover_checkpoint_dir(out_dir, log=log)
    if out_dir.exists() and not out_dir.is_dir():
        raise ParameterError(f"{out_dir}: exists and is not a folder")
    if resume:
        state_file = out_dir / files.state_file
        if not state_file.is_file():
            raise ParameterError(
                f"cannot resume: {state_file} not found ({files.rerun} without --resume first)"
            )
        state = load_state(state_file)
        if state.get("format") != files.state_format:
            raise ParameterError(f"{state_file}: not a ClipCrop {files.kind} state")
        return state
    if holds_checkpoint(out_dir, files.state_file) and not overwrite:
        raise ParameterError(
            f"{out_dir} already holds a checkpoint; pass --resume to continue it, "
            "--overwrite to replace it, or another --out"
        )
    return None


def _is_checkpoint_entry(name: str) -> bool:
    return name in _CHECKPOINT_NAMES or (name.startswith("rng_state_") and name.endswith(".pt"))


def clear_checkpoint(out_dir: Path) -> None:
    """Remove the checkpoint files of ``out_dir`` (``overwrite``), keeping anything else."""
    if not out_dir.is_dir():
        return
    for entry in out_dir.iterdir():
        if _is_checkpoint_entry(entry.name):
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def recover_checkpoint_dir(out_dir: Path, *, log: logging.Logger = logger) -> None:
    """Finish or undo a checkpoint swap that was interrupted (see :func:`publish_checkpoint`).

    ``log`` gets the warning when a complete save is finished, so it names the run that repairs.
    """
    parent, name = out_dir.parent, out_dir.name
    if not parent.is_dir():
        return
    temps = sorted(parent.glob(f".{name}.tmp-*"))
    complete = [t for t in temps if (t / _COMPLETE).is_file()]
    for t in temps:
        if t not in complete[-1:]:
            shutil.rmtree(t, ignore_errors=True)
    olds = sorted(parent.glob(f".{name}.old-*"))
    if complete:
        log.warning("finishing an interrupted checkpoint save: %s", complete[-1])
        if not out_dir.exists() and olds:
            os.replace(olds[-1], out_dir)
            olds = olds[:-1]
        publish_checkpoint(complete[-1], out_dir)
    elif not out_dir.exists() and olds:
        os.replace(olds[-1], out_dir)
        olds = olds[:-1]
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- saving


def checkpoint_tmp_dir(out_dir: Path, step: int, *, create: bool = True) -> Path:
    """The temporary sibling of ``out_dir`` that the checkpoint of ``step`` is written into.

    A leftover of an earlier attempt at the same step is replaced when ``create``; with several
    processes only one creates it (the others only need the path).
    """
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{step}"
    if create:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    return tmp


def publish_complete(tmp: Path, out_dir: Path, step: int, log: logging.Logger) -> None:
    """Mark the fully written checkpoint in ``tmp`` complete and make it ``out_dir``'s content.

    The marker comes last so that :func:`recover_checkpoint_dir` can tell a save that was only
    interrupted while swapping (finish it) from a half-written one (drop it). Every file gets
    the permissions the umask gives first (safetensors and copied files do not: see
    :func:`clipcrop.io.atomic_files.apply_umask`).
    """
    apply_umask(tmp)
    (tmp / _COMPLETE).write_text(str(step))
    publish_checkpoint(tmp, out_dir)
    log.info("saved checkpoint at step %d to %s", step, out_dir)


def publish_checkpoint(tmp: Path, out_dir: Path) -> None:
    """Make the complete checkpoint in ``tmp`` the content of ``out_dir``.

    Files of ``out_dir`` that are not part of a checkpoint (the log, user files) move into it
    first; then two renames swap the folders. Readers see the old or the new checkpoint, never a
    mix; a crash in between is repaired by :func:`recover_checkpoint_dir`.
    """
    if out_dir.exists():
        for entry in out_dir.iterdir():
            if not _is_checkpoint_entry(entry.name) and not (tmp / entry.name).exists():
                os.replace(entry, tmp / entry.name)
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
    (out_dir / _COMPLETE).unlink(missing_ok=True)


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


# ----------------------------------------------------------------------------- LR schedule


class LRSchedule:
    """Multiplier of the base LR at a step: linear warm-up, then constant / cosine / linear decay."""

    def __init__(self, kind: str, total_steps: int, warmup_steps: int = 0) -> None:
        self.kind = kind
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    @classmethod
    def for_config(cls, config: Any, total_steps: int) -> LRSchedule:
        """The schedule of a run set up by ``config`` (``lr_schedule``, ``warmup_steps``).

        Always a new object: a scheduler's own schedule takes the saved run's settings when its
        state is loaded, and :func:`restore_optimizer` needs one with this run's.
        """
        return cls(config.lr_schedule, total_steps, config.warmup_steps)

    def __call__(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress


def restore_optimizer(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    state: dict,
    schedule: LRSchedule,
) -> None:
    """Load the saved optimizer and LR-scheduler states, then run on ``schedule`` from here.

    ``load_state_dict`` restores the saved schedule's settings into the scheduler's own
    :class:`LRSchedule`; this run's length wins (a longer ``max_steps`` extends the schedule from
    the current step), so ``schedule`` must be a new object built from this run's settings.
    """
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scheduler.lr_lambdas = [schedule] * len(optimizer.param_groups)
    for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = base_lr * schedule(scheduler.last_epoch)


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
    history, calls ``on_step``, moves the bar and checkpoints every ``save_every`` steps. At the
    end it checkpoints unless the last step was just saved, and logs the ``end`` event.

    Attributes:
        log: where the records go.
        save: writes and publishes the checkpoint of a step (the loop logs the ``checkpoint`` event).
        total: the planned length (the LR schedule's), for ``stop_at`` and the bar.
        stop_after: stop early at this step (a checkpoint; ``resume`` continues exactly).
        save_every: checkpoint cadence in steps; None: at the end only.
        on_step: called with each step's record.
        progress: :func:`progress_bar`'s ``enabled``.
        desc: the bar's label.
    """

    log: StepLog
    save: Callable[[int], None]
    total: int
    stop_after: int | None = None
    save_every: int | None = None
    on_step: Callable[[dict], None] | None = None
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
        on_step: Callable[[dict], None] | None,
        desc: str,
        show_progress: bool = True,
    ) -> StepLoop:
        """The loop of a run set up by ``config`` (a ``TrainConfig`` or ``FinetuneConfig``: both
        name ``stop_after``, ``save_every`` and ``progress`` alike). ``show_progress=False`` hides
        the bar whatever the config says (a process other than the main one)."""
        return cls(
            log,
            save,
            total,
            stop_after=config.stop_after,
            save_every=config.save_every,
            on_step=on_step,
            progress=config.progress if show_progress else False,
            desc=desc,
        )

    @property
    def stop_at(self) -> int:
        """The step this call ends at."""
        return min(self.total, self.stop_after) if self.stop_after is not None else self.total

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
                logs, reports and saves between two steps, as the runs always did.
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
                self.log.write(record)
                history.append(record)
                if self.on_step is not None:
                    self.on_step(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                if self.save_every and step % self.save_every == 0 and step < stop_at:
                    self._checkpoint(step)
                    last_saved = step
        finally:
            if bar is not None:
                bar.close()
        if last_saved != step:
            self._checkpoint(step)
        self.log.write({"event": "end", "step": step, "elapsed_s": time.perf_counter() - started})
        return step, history

    def _checkpoint(self, step: int) -> None:
        self.save(step)
        self.log.write({"event": "checkpoint", "step": step})


__all__ = [
    "LR_SCHEDULES",
    "RUN_ONLY_SETTINGS",
    "LRSchedule",
    "RunFiles",
    "RunResult",
    "StepLog",
    "StepLoop",
    "check_run_length",
    "checkpoint_tmp_dir",
    "clear_checkpoint",
    "holds_checkpoint",
    "load_state",
    "prepare_out_dir",
    "progress_bar",
    "publish_checkpoint",
    "publish_complete",
    "recover_checkpoint_dir",
    "restore_optimizer",
    "rng_state",
    "set_rng_state",
    "step_record",
    "warn_changed_settings",
]
