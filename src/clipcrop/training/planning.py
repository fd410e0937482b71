"""Which samples make up each training step and how each one is augmented (paper 3.3).

Every decision (epoch order, mosaic grid, target tile, the other tiles, whether the text is
dropped) is drawn from a generator seeded by ``(seed, epoch, position)``, never from global
state, so a step's batch is a pure function of the seed and the step number: resuming,
``num_workers`` and the feature cache cannot change it.

Mosaics and text drop: a sample trained without a condition (``base`` variant, or text dropped
for the ``text_drop`` share of samples so that one checkpoint also crops un-conditioned) is
always a single image, since without text nothing says which tile of a mosaic the targets
belong to.

Box formats: GAIC crops enter as pixels (:class:`~clipcrop.data.datasets.GaicSample`) and leave
as normalised xyxy in the (mosaic) image (:class:`TrainItem`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.datasets import GaicSample
from ..data.mosaic import make_mosaic, sample_grid
from ..errors import DatasetError
from ..io.images import load_image
from ..limits import Limits
from .config import TrainConfig


@dataclass(frozen=True)
class ItemPlan:
    """How one training sample is built (decided up front, without I/O).

    Attributes:
        sample_index: index of the GAIC sample that carries the caption and the targets.
        grid: 1, 2 or 3.
        target_tile: row-major tile of the target in the mosaic (0 when grid is 1).
        tiles: sample indices of every tile, row-major (``tiles[target_tile] == sample_index``).
        drop_text: train this sample without its text.
        load_image: False when the (single) image's features are cached already.
    """

    sample_index: int
    grid: int
    target_tile: int
    tiles: tuple[int, ...]
    drop_text: bool
    load_image: bool = True


@dataclass
class TrainItem:
    """A built training sample.

    Attributes:
        plan: how it was built.
        image: the RGB (mosaic) image, or None when not loaded (cached features).
        size: (width, height) of the (mosaic) image in pixels.
        boxes: (K, 4) float32 target crops, normalised xyxy in the (mosaic) image.
        mos: (K,) float32 their MOS.
        best_crop: (4,) float32 the target's best crop, normalised xyxy in the mosaic; None when K = 0.
        caption: the condition text, None when trained without text.
    """

    plan: ItemPlan
    image: Any
    size: tuple[int, int]
    boxes: np.ndarray
    mos: np.ndarray
    best_crop: np.ndarray | None
    caption: str | None


class TrainingData:
    """Epoch order and per-sample augmentation, a pure function of ``(seed, epoch, position)``.

    Each epoch visits every sample once in a seeded random order; the order is padded (with its own
    first samples) to whole global batches of ``batch_size * world_size``. Global batch ``s`` of the
    epoch is positions ``s*B*P ... (s+1)*B*P - 1``; process ``r`` takes the ``r``-th slice of ``B``.

    Args:
        samples: the GAIC samples.
        config: the run's settings (seed, batch size, mosaic, text use, text drop).
        world_size, rank: data-parallel processes and this one's index.
        mosaic_max_side: mosaics are composed at most this many pixels wide or high (the backbone
            resizes them to its input size anyway).
    """

    def __init__(
        self,
        samples: Sequence[GaicSample],
        config: TrainConfig,
        world_size: int = 1,
        rank: int = 0,
        mosaic_max_side: int = 768,
    ) -> None:
        if not samples:
            raise DatasetError("no training samples")
        self.samples = list(samples)
        self.config = config
        self.world_size = world_size
        self.rank = rank
        self.mosaic_max_side = mosaic_max_side
        self.limits = Limits()

    @property
    def global_batch(self) -> int:
        return self.config.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.samples) / self.global_batch))

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Sample indices of every global position of ``epoch`` (length ``steps_per_epoch * B * P``)."""
        n = len(self.samples)
        perm = np.random.default_rng([self.config.seed, epoch]).permutation(n)
        total = self.steps_per_epoch * self.global_batch
        return np.resize(perm, total)  # pads by repeating the order from its start

    def plan(self, epoch: int, position: int, sample_index: int) -> ItemPlan:
        """Decide how the sample at global ``position`` of ``epoch`` is built."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch, position, 1])
        drop_text = bool(cfg.uses_text and rng.random() < cfg.text_drop)
        conditioned = cfg.uses_text and not drop_text
        grid = sample_grid(rng) if cfg.mosaic and conditioned else 1
        if grid == 1:
            return ItemPlan(sample_index, 1, 0, (sample_index,), drop_text)
        target_tile = int(rng.integers(grid * grid))
        others = [i for i in range(len(self.samples)) if i != sample_index] or [sample_index]
        picks = rng.choice(len(others), size=grid * grid - 1, replace=len(others) < grid * grid - 1)
        tiles = [others[int(i)] for i in picks]
        tiles.insert(target_tile, sample_index)
        return ItemPlan(sample_index, grid, target_tile, tuple(tiles), drop_text)

    def plans_for_step(self, epoch: int, step_in_epoch: int) -> list[ItemPlan]:
        """This process's plans for one step."""
        order = self.epoch_order(epoch)
        start = step_in_epoch * self.global_batch + self.rank * self.config.batch_size
        return [self.plan(epoch, p, int(order[p])) for p in range(start, start + self.config.batch_size)]

    def build(self, plan: ItemPlan) -> TrainItem:
        """Load and compose one sample (runs in data-loader workers)."""
        sample = self.samples[plan.sample_index]
        boxes = sample.boxes_xyxy_norm()
        mos = np.asarray(sample.mos, dtype=np.float64)
        best = boxes[sample.best_crop_index()] if len(mos) else None
        caption = None if (plan.drop_text or not self.config.uses_text) else sample.caption
        if plan.grid == 1:
            image = self._load(plan.sample_index) if plan.load_image else None
            return TrainItem(
                plan,
                image,
                (sample.width, sample.height),
                boxes.astype(np.float32),
                mos.astype(np.float32),
                None if best is None else best.astype(np.float32),
                caption,
            )
        images = [self._load(i) for i in plan.tiles]
        target = images[plan.target_tile]
        scale = min(1.0, self.mosaic_max_side / (plan.grid * max(target.size)))
        if scale < 1.0:
            cell = (max(1, round(target.width * scale)), max(1, round(target.height * scale)))
            images[plan.target_tile] = target.resize(cell, resample=3)
        mosaic = make_mosaic(images, plan.grid, plan.target_tile)
        boxes_m = mosaic.to_mosaic(boxes) if len(boxes) else boxes
        best_m = mosaic.to_mosaic(best) if best is not None else None
        return TrainItem(
            plan,
            mosaic.image,
            mosaic.image.size,
            np.asarray(boxes_m, dtype=np.float32).reshape(-1, 4),
            mos.astype(np.float32),
            None if best_m is None else np.asarray(best_m, dtype=np.float32),
            caption,
        )

    def _load(self, index: int):
        return load_image(self.samples[index].image_path, self.limits).image


class StepDataset(torch.utils.data.Dataset):
    """Plans of consecutive steps, flattened; ``DataLoader(batch_size=B)`` regroups them by step."""

    def __init__(self, data: TrainingData, plans: list[ItemPlan]) -> None:
        self.data = data
        self.plans = plans

    def __len__(self) -> int:
        return len(self.plans)

    def __getitem__(self, index: int) -> TrainItem:
        return self.data.build(self.plans[index])


def collate_items(items: list[TrainItem]) -> list[TrainItem]:
    return items


__all__ = ["ItemPlan", "StepDataset", "TrainItem", "TrainingData", "collate_items"]
