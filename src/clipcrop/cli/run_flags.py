"""Flags and report shared by the commands that run a :mod:`clipcrop.training.runloop` training loop.

``clipcrop train`` (:mod:`clipcrop.cli.train`) and ``clipcrop finetune-backbone``
(:mod:`clipcrop.cli.finetune`) take the same run-length, optimizer, checkpoint and device flags,
and both configs name those settings alike. Defining them once keeps the two commands' flags,
defaults and help from drifting apart; where a default or help text differs between the commands
it is a parameter, and each command still decides where in its ``--help`` a block goes.

The training library's messages name its settings (``resume=True``, ``text_annotations``); these
commands reword them into flags (:func:`in_flag_words`). Like every ``cli_*`` module this imports
neither torch nor the model, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from ..errors import ClipCropError

#: flags whose definition is the same in both commands (added by :func:`add_flags`)
_SHARED: dict[str, dict[str, Any]] = {
    "--max-samples": {"type": int, "metavar": "N", "help": "use the first N images only (default: all)"},
    "--weight-l1": {"type": float, "default": 5.0, "help": "L1 box loss weight (default 5)"},
    "--weight-giou": {"type": float, "default": 2.0, "help": "GIoU loss weight (default 2)"},
    "--quiet": {
        "action": "store_true",
        "help": "no progress (default: a bar with ETA on a terminal, else a line every 1%% of the run)",
    },
}
#: how the training library's messages name a setting -> how these commands spell it
LIBRARY_SPELLINGS = {
    "resume=True": "--resume",
    "overwrite=True": "--overwrite",
    "another out_dir": "another --out",
    "without resume first": "without --resume first",
    "(text_annotations)": "(--text-annotations DIR)",
    "variant='base'": "--variant base",
    "with finetune_backbone_lr": "with --finetune-backbone-lr",
    "without finetune_backbone_lr": "without --finetune-backbone-lr",
}
#: config fields whose flag is not ``--`` + the name with dashes
FIELD_FLAGS = {"out_dir": "--out", "mixed_precision": "--precision"}
#: ``--device`` values besides ``cuda:N`` (:func:`clipcrop.training.sizing.check_device` is the rule)
DEVICES = ("auto", "cpu", "cuda")
#: ``--report-to`` values (:data:`clipcrop.training.reporting.REPORT_TO`; a test keeps them equal)
REPORT_TO = ("tensorboard", "none")


class _Container(Protocol):
    """An ``ArgumentParser`` or one of its argument groups."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action: ...

    def add_mutually_exclusive_group(self, **kwargs: Any) -> Any: ...


def add_flags(p: _Container, *names: str) -> None:
    """Add the shared flags ``names`` (keys of ``_SHARED``), in this order."""
    for name in names:
        p.add_argument(name, **_SHARED[name])


def add_schedule_flags(
    p: _Container, *, default_epochs: int, batch_help: str, lr_help: str, grad_clip: float
) -> None:
    """Add the run-length and optimizer flags: ``--epochs``/``--max-steps``, ``--stop-after``,
    ``--batch-size``, ``--lr``, ``--weight-decay``, ``--lr-schedule``, ``--warmup-steps`` and
    ``--grad-clip``; the arguments are what the two commands say differently."""
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "--epochs", type=int, metavar="N", help=f"passes over the data (default {default_epochs})"
    )
    length.add_argument(
        "--max-steps", type=int, metavar="N", help="optimizer steps (default: the epochs' steps)"
    )
    p.add_argument(
        "--stop-after",
        type=int,
        metavar="N",
        help="stop with a checkpoint after step N, the LR schedule still planned to the end "
        "(continue with --resume; default: run to the end)",
    )
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help=f"{batch_help} (default 8)")
    p.add_argument("--lr", type=float, default=1e-4, help=lr_help)
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    p.add_argument(
        "--lr-schedule", choices=["constant", "cosine", "linear"], default="cosine", help="default cosine"
    )
    p.add_argument(
        "--warmup-steps", type=int, default=0, metavar="N", help="steps of linear LR warm-up (default 0)"
    )
    p.add_argument(
        "--grad-clip",
        type=float,
        default=grad_clip,
        help=f"max gradient norm, 0 = off (default {grad_clip:g})",
    )


#: the run loop's defaults, spelled out here so that ``--help`` needs no torch import
#: (tests/test_training.py checks them against :mod:`clipcrop.training.runloop`)
DEFAULT_SAVE_EVERY = 500
DEFAULT_KEEP_CHECKPOINTS = 3


def add_checkpoint_flags(p: _Container) -> None:
    """Add the save cadence, ``--keep-checkpoints`` and the exclusive ``--resume``/``--overwrite``."""
    p.add_argument(
        "--save-every",
        type=int,
        default=DEFAULT_SAVE_EVERY,
        metavar="N",
        help=f"checkpoint every N steps, at each epoch end and at the end (default {DEFAULT_SAVE_EVERY}; "
        "0: epoch ends and the end only)",
    )
    p.add_argument(
        "--no-epoch-checkpoints", action="store_true", help="no checkpoint at epoch ends (default: one each)"
    )
    p.add_argument(
        "--keep-checkpoints",
        type=int,
        default=DEFAULT_KEEP_CHECKPOINTS,
        metavar="K",
        help="checkpoints kept: the latest in --out and the K-1 before it in --out/checkpoints/step-N "
        f"(default {DEFAULT_KEEP_CHECKPOINTS})",
    )
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue the checkpoint in --out exactly")
    resume.add_argument("--overwrite", action="store_true", help="replace a checkpoint in --out")


def add_device_flags(p: _Container, *, what: str) -> None:
    """Add ``--device`` (``--cpu`` its older spelling) and ``--report-to``."""
    device = p.add_mutually_exclusive_group()
    device.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help=f"auto, cpu, cuda or cuda:N: where to {what} (default auto: a CUDA GPU when there is one; "
        "under accelerate launch or torchrun each process takes its own)",
    )
    device.add_argument("--cpu", action="store_true", help="the same as --device cpu")
    p.add_argument(
        "--report-to",
        choices=REPORT_TO,
        default="tensorboard",
        help="tensorboard: event files in --out/tensorboard (losses, learning rate, validation); "
        "none (default tensorboard)",
    )


def check_device_flag(value: str) -> None:
    """``--device`` is auto, cpu, cuda or cuda:N (a usage error otherwise, before torch loads)."""
    from .checks import UsageError

    index = value[5:] if value.startswith("cuda:") else ""
    if value not in DEVICES and not index.isdigit():
        raise UsageError(f"--device takes auto, cpu, cuda or cuda:N, got {value!r}")


def flag_spelling(message: str, args: argparse.Namespace) -> str:
    """A library message in the command's words: the phrases of :data:`LIBRARY_SPELLINGS`, and a
    leading setting name (``batch_size must be ...``, ``variant 'x' is not ...``) as its flag when
    the command has one (a leading path, ``ckpt already holds ...``, stays)."""
    for words, flag in LIBRARY_SPELLINGS.items():
        message = message.replace(words, flag)
    first = re.match(r"[a-z][a-z0-9_]*(?= must | '| \")", message)
    if first is not None:
        name = first.group(0)
        flag = FIELD_FLAGS.get(name) or (f"--{name.replace('_', '-')}" if hasattr(args, name) else None)
        if flag is not None:
            message = flag + message[len(name) :]
    return message


@contextmanager
def in_flag_words(args: argparse.Namespace) -> Iterator[None]:
    """Errors raised inside speak of flags (:func:`flag_spelling`), not of config fields."""
    try:
        yield
    except ClipCropError as exc:
        exc.args = (flag_spelling(str(exc), args), *exc.args[1:])
        raise


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields that the shared flags (and ``--backbone``, ``--out``) set.

    Both ``TrainConfig`` and ``FinetuneConfig`` have every one of these fields, under these names.
    """
    from ..modeling.backbone import DEFAULT_BACKBONE

    return {
        "backbone": args.backbone or os.environ.get("CLIPCROP_MODEL") or DEFAULT_BACKBONE,
        "out_dir": args.out,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "stop_after": args.stop_after,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "grad_clip": args.grad_clip,
        "lr_schedule": args.lr_schedule,
        "warmup_steps": args.warmup_steps,
        "weight_l1": args.weight_l1,
        "weight_giou": args.weight_giou,
        "device": "cpu" if args.cpu else args.device,
        "report_to": args.report_to,
        "save_every": args.save_every or None,
        "save_each_epoch": not args.no_epoch_checkpoints,
        "keep_checkpoints": args.keep_checkpoints,
        "resume": args.resume,
        "overwrite": args.overwrite,
        "seed": args.seed,
        "max_samples": args.max_samples,
        "progress": False if args.quiet else None,
    }


def summary(verb: str, result: Any, keys: tuple[str, ...]) -> str:
    """The one-line report of a finished call: ``clipcrop: <verb> to step S/T in E s`` and the
    last step's ``keys`` (e.g. the losses), so a user sees where the run stands without the log."""
    last = result.history[-1] if result.history else None
    line = f"clipcrop: {verb} to step {result.step}/{result.total_steps} in {result.elapsed_s:.1f} s"
    if last is not None:
        line += ", " + ", ".join(f"{k} {last[k]:.4f}" for k in keys)
    return line
