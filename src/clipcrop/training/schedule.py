"""The learning-rate schedule of both trainers, and how a resumed run takes it up again."""

from __future__ import annotations

import math
from typing import Any

import torch

LR_SCHEDULES = ("constant", "cosine", "linear")


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


__all__ = ["LR_SCHEDULES", "LRSchedule", "restore_optimizer"]
