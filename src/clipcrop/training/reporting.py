"""What a run reports beside ``train_log.jsonl``: TensorBoard event files (``report_to``).

``out_dir/tensorboard/`` gets, per step, every loss term by name (``loss/loss``, ``loss/loss_l1``,
``loss/loss_l1_0`` for the first auxiliary layer, ...), the learning rates (``lr/decoder`` or
``lr/model``, ``lr/backbone``), the step time and the shares of text-dropped and mosaic samples;
per validation every metric (``val/acc1_5``, ``val/text_iou_mean``, ...) and a few validation
images with their top-3 crops drawn (``val/crops/0`` ...). Open it with
``tensorboard --logdir CKPT_DIR/tensorboard``.

A resumed run purges the events written after its checkpoint (a run killed between two saves
logged steps it will redo), so every step appears once. Only the main process reports.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

REPORT_TO = ("tensorboard", "none")
EVENTS_DIR = "tensorboard"
#: step-record fields that are not scalars to plot
_NOT_PLOTTED = frozenset({"event", "step", "epoch", "time"})


class Reporter(Protocol):
    """Where step records and validations go besides the JSON-lines log."""

    def step(self, record: dict) -> None: ...

    def validation(self, step: int, metrics: dict[str, float], previews: list[Any]) -> None: ...

    def close(self) -> None: ...


class NullReporter:
    """Reports nothing (``report_to="none"``, or a process other than the main one)."""

    def step(self, record: dict) -> None:
        return None

    def validation(self, step: int, metrics: dict[str, float], previews: list[Any]) -> None:
        return None

    def close(self) -> None:
        return None


def scalar_tag(name: str, lr_name: str = "model") -> str | None:
    """The TensorBoard tag of a step-record field: ``loss*`` under ``loss/``, ``lr`` as
    ``lr/<lr_name>``, ``lr_backbone`` as ``lr/backbone``, ``step_time`` as ``time/step_s``,
    other numbers under ``data/``; None for fields that are not plotted."""
    if name in _NOT_PLOTTED:
        return None
    if name.startswith("loss"):
        return f"loss/{name}"
    if name == "lr":
        return f"lr/{lr_name}"
    if name == "lr_backbone":
        return "lr/backbone"
    if name == "step_time":
        return "time/step_s"
    return f"data/{name}"


class TensorBoardReporter:
    """Writes TensorBoard event files into ``log_dir``.

    Args:
        log_dir: the events folder (``out_dir/tensorboard``).
        purge_step: the step a resumed run continues from (later events are dropped).
        lr_name: what the main learning rate trains (``decoder`` or ``backbone``).
    """

    def __init__(self, log_dir: Path, *, purge_step: int | None = None, lr_name: str = "model") -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.lr_name = lr_name
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def step(self, record: dict) -> None:
        step = int(record["step"])
        for name, value in record.items():
            tag = scalar_tag(name, self.lr_name)
            if tag is not None and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(tag, float(value), step)

    def validation(self, step: int, metrics: dict[str, float], previews: list[Any]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"val/{name}", float(value), step)
        for i, image in enumerate(previews):
            self.writer.add_image(f"val/crops/{i}", np.asarray(image.convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def make_reporter(
    report_to: str, out_dir: Path, *, enabled: bool, purge_step: int | None, lr_name: str
) -> Reporter:
    """The reporter of a run: TensorBoard when asked and this is the main process (a warning and
    nothing when the ``tensorboard`` package is missing: the ``train`` extra installs it)."""
    if report_to != "tensorboard" or not enabled:
        return NullReporter()
    try:
        return TensorBoardReporter(out_dir / EVENTS_DIR, purge_step=purge_step, lr_name=lr_name)
    except ImportError:
        logger.warning(
            "no TensorBoard events: the tensorboard package is not installed (pip install clipcrop[train])"
        )
        return NullReporter()


__all__ = [
    "EVENTS_DIR",
    "REPORT_TO",
    "NullReporter",
    "Reporter",
    "TensorBoardReporter",
    "make_reporter",
    "scalar_tag",
]
