"""A run's output folder: refused or reused on purpose, checkpoints published whole, crashes repaired.

Shared by both trainers (:mod:`clipcrop.training.trainer`, :mod:`clipcrop.training.finetune`):

* :func:`prepare_out_dir` refuses to replace a checkpoint unless told and reads the saved state
  on resume; :func:`recover_checkpoint_dir` repairs a save that a crash interrupted.
* Checkpoints are written into a temporary sibling (:func:`checkpoint_tmp_dir`) and swapped in
  (:func:`publish_complete`, :func:`publish_checkpoint`): readers see the old or the new
  checkpoint, never a mix. Each names its step in ``checkpoint.json``.
* History: with ``keep > 1`` the checkpoint a save replaces moves to
  ``out_dir/checkpoints/step-<N>/`` (a rename, no copy) and only the newest ``keep - 1`` stay
  there, so ``out_dir`` plus ``checkpoints/`` hold the last ``keep`` checkpoints, each loadable
  as it is (a backbone named by a relative path is re-pointed from its new place).
* A full disk (:func:`disk_full_guard`) drops the half-written save and raises
  :class:`~clipcrop.errors.DiskFullError` naming the last complete checkpoint, which is intact.

Helpers that warn take the caller's logger, so messages keep naming the run that wrote them.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DiskFullError, ParameterError
from ..io.atomic_files import apply_umask
from ..model_source import is_clipcrop_checkpoint
from ..modeling.model import INSIDE_BACKBONE, portable_backbone_ref, resolve_backbone_ref

logger = logging.getLogger(__name__)

#: written last into a temporary checkpoint folder: a folder without it is a half-written save
_COMPLETE = ".complete"
#: names in a checkpoint folder that belong to the checkpoint (replaced as a whole at each save).
#: ``training_state.pt`` is :data:`clipcrop.training.config.STATE_FILE`; fine-tuning's state file is not
#: listed, as it never was: every save writes it anew, and listing it would change which stray
#: files of a reused folder survive a save.
_CHECKPOINT_NAMES = (
    "config.json",
    "model.safetensors",
    "README.md",
    "training_state.pt",
    "backbone",
    "checkpoint.json",
)
#: the step of a checkpoint, written by :func:`publish_complete`
STEP_FILE = "checkpoint.json"
#: the folder of the older checkpoints kept beside the latest (``keep > 1``)
HISTORY_DIR = "checkpoints"
#: what a fresh run (``overwrite``) removes besides the checkpoint: an older run's history, best
#: checkpoint and TensorBoard events would pass for this run's
RUN_OUTPUTS = (HISTORY_DIR, "best", "tensorboard")
#: errno values that mean the disk (or the user's quota) is full
_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class RunFiles:
    """What one kind of run keeps in its output folder, and how its messages name it.

    Attributes:
        state_file: optimizer, schedule, step and RNG states (``torch.save``).
        log_file: the JSON-lines log.
        state_format: the ``format`` value of the state, so one kind never resumes the other's.
        kind: the run in messages ("not a ClipCrop <kind> state").
        rerun: the verb of the hint after a failed resume ("<rerun> without resume first").
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
                f"cannot resume: {state_file} not found ({files.rerun} without resume first)"
            )
        state = load_state(state_file)
        if state.get("format") != files.state_format:
            raise ParameterError(f"{state_file}: not a ClipCrop {files.kind} state")
        return state
    if holds_checkpoint(out_dir, files.state_file) and not overwrite:
        raise ParameterError(
            f"{out_dir} already holds a checkpoint; set resume=True to continue it, "
            "overwrite=True to replace it, or another out_dir"
        )
    return None


def _is_checkpoint_entry(name: str) -> bool:
    return name in _CHECKPOINT_NAMES or (name.startswith("rng_state_") and name.endswith(".pt"))


def clear_checkpoint(out_dir: Path) -> None:
    """Remove the checkpoint files and the run's other outputs (:data:`RUN_OUTPUTS`) from
    ``out_dir`` (``overwrite``), keeping anything else (the user's own files)."""
    if not out_dir.is_dir():
        return
    for entry in out_dir.iterdir():
        if _is_checkpoint_entry(entry.name) or entry.name in RUN_OUTPUTS:
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


def publish_complete(tmp: Path, out_dir: Path, step: int, log: logging.Logger, *, keep: int = 1) -> None:
    """Mark the fully written checkpoint in ``tmp`` complete and make it ``out_dir``'s content.

    The marker comes last so that :func:`recover_checkpoint_dir` can tell a save that was only
    interrupted while swapping (finish it) from a half-written one (drop it). Every file gets
    the permissions the umask gives first (safetensors and copied files do not: see
    :func:`clipcrop.io.atomic_files.apply_umask`). ``keep``: see :func:`publish_checkpoint`.
    """
    write_step(tmp, step)
    apply_umask(tmp)
    (tmp / _COMPLETE).write_text(str(step))
    publish_checkpoint(tmp, out_dir, keep=keep)
    log.info("saved checkpoint at step %d to %s", step, out_dir)


def publish_checkpoint(tmp: Path, out_dir: Path, *, keep: int = 1) -> None:
    """Make the complete checkpoint in ``tmp`` the content of ``out_dir``.

    Files of ``out_dir`` that are not part of a checkpoint (the log, ``checkpoints/``, ``best/``,
    user files) move into it first; then two renames swap the folders. Readers see the old or
    the new checkpoint, never a mix; a crash in between is repaired by :func:`recover_checkpoint_dir`.
    With ``keep > 1`` the replaced checkpoint joins the history (see the module docstring);
    otherwise it is deleted.
    """
    if out_dir.exists():
        for entry in out_dir.iterdir():
            if not _is_checkpoint_entry(entry.name) and not (tmp / entry.name).exists():
                os.replace(entry, tmp / entry.name)
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if keep > 1:
            _keep_in_history(old, out_dir, keep - 1)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
    (out_dir / _COMPLETE).unlink(missing_ok=True)


def replace_folder(tmp: Path, target: Path) -> None:
    """Make the fully written folder ``tmp`` ``target`` (``best/``) with two renames, the old one
    removed after; permissions from the umask, as every checkpoint."""
    apply_umask(tmp)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def write_step(folder: Path, step: int) -> None:
    """Name the step of the checkpoint in ``folder`` (``checkpoint.json``)."""
    (folder / STEP_FILE).write_text(json.dumps({"step": step}) + "\n")


def checkpoint_step(folder: Path) -> int | None:
    """The step a checkpoint folder was saved at (its ``checkpoint.json``), None if unknown."""
    try:
        return int(json.loads((folder / STEP_FILE).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def history(out_dir: Path) -> list[Path]:
    """The older checkpoints kept in ``out_dir/checkpoints/``, oldest first."""
    folder = out_dir / HISTORY_DIR
    if not folder.is_dir():
        return []
    kept = [(checkpoint_step(p), p) for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-")]
    return [p for step, p in sorted((s, p) for s, p in kept if s is not None)]


def _keep_in_history(old: Path, out_dir: Path, keep: int) -> None:
    """Move the replaced checkpoint ``old`` into the history and prune it to ``keep`` folders.
    A checkpoint without a step (saved by an older version) is not kept."""
    step = checkpoint_step(old)
    if step is None:
        return
    target = out_dir / HISTORY_DIR / f"step-{step:08d}"
    target.parent.mkdir(exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(old, target)
    _repoint_backbone(target, home_before=out_dir)
    for stale in history(out_dir)[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)


def _repoint_backbone(folder: Path, home_before: Path) -> None:
    """A ClipCrop checkpoint moved from ``home_before`` to ``folder`` names its backbone from
    its new place (a relative path would point elsewhere now)."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    ref = config.get("backbone") if is_clipcrop_checkpoint(config) else None
    if not isinstance(ref, str) or ref == INSIDE_BACKBONE:
        return
    target = resolve_backbone_ref(ref, home_before)
    config["backbone"] = portable_backbone_ref(target, folder)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


@contextmanager
def disk_full_guard(tmp: Path, out_dir: Path, step: int) -> Iterator[None]:
    """Around writing the checkpoint of ``step`` into ``tmp``: when the disk fills, remove the
    half-written ``tmp`` and raise :class:`DiskFullError` saying what is intact and what to do.

    Raises:
        DiskFullError: no space left (or the quota is used up) while saving.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in _FULL:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        last = checkpoint_step(out_dir)
        intact = (
            f"the checkpoint of step {last} in {out_dir} is intact"
            if last is not None
            else f"{out_dir} holds no complete checkpoint yet"
        )
        raise DiskFullError(
            f"no space left on the device of {out_dir} while saving the checkpoint of step {step} "
            f"({_free_mb(out_dir)} MB free); {intact}. Free some space (or keep fewer checkpoints) "
            "and resume the run"
        ) from exc


def _free_mb(path: Path) -> int:
    for folder in (path, *path.parents):
        if folder.exists():
            return shutil.disk_usage(folder).free // 2**20
    return 0


__all__ = [
    "HISTORY_DIR",
    "RUN_OUTPUTS",
    "STEP_FILE",
    "RunFiles",
    "checkpoint_step",
    "disk_full_guard",
    "history",
    "checkpoint_tmp_dir",
    "clear_checkpoint",
    "holds_checkpoint",
    "load_state",
    "prepare_out_dir",
    "publish_checkpoint",
    "publish_complete",
    "recover_checkpoint_dir",
    "replace_folder",
    "write_step",
]
