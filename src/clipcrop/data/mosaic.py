"""Mosaic augmentation for training (paper 3.3).

GAIC's annotated crops lie on a fixed grid of each image, so a decoder trained on single images
learns that grid. ClipCrop therefore trains on mosaics: a single image, a 2x2 or a 3x3 grid of
images, chosen with equal probability. Only one tile, the *target*, carries the caption and the
ground-truth crops; its boxes are mapped into mosaic coordinates, so in the mosaic they sit
anywhere and at any scale.

A mosaic can make the caption ambiguous (another tile may show the same thing). The paper drops
the text-selected initial boxes that are far from the target's best crop or contain less than half
of it: :func:`filter_initial_boxes` computes that mask over OWL-ViT's per-token boxes.

Coordinates: every box here is ``xyxy`` *normalised*, i.e. x as a fraction of the width and y of
the height of the image it refers to (a tile's own image, or the whole mosaic). Tiles are listed
row-major: tile ``r * grid + c`` is in row ``r``, column ``c``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

GRID_CHOICES: tuple[int, ...] = (1, 2, 3)


def sample_grid(rng: np.random.Generator | np.random.RandomState | random.Random | None = None) -> int:
    """Draw the mosaic grid size: 1 (the image alone), 2 (2x2) or 3 (3x3), each with p = 1/3.

    ``rng`` is a ``numpy.random.Generator`` (or legacy ``RandomState``) or a ``random.Random`` (seed it for reproducible
    data loading); ``None`` draws from a fresh, unseeded numpy generator.
    """
    if rng is None:
        rng = np.random.default_rng()
    if isinstance(rng, random.Random):
        return GRID_CHOICES[rng.randrange(len(GRID_CHOICES))]
    if isinstance(rng, np.random.RandomState):  # legacy numpy API
        return GRID_CHOICES[int(rng.randint(len(GRID_CHOICES)))]
    return GRID_CHOICES[int(rng.integers(len(GRID_CHOICES)))]


def _as_rect(tile_rect: np.ndarray | torch.Tensor | tuple[float, ...], like: ArrayT) -> ArrayT:
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(np.asarray(tile_rect, dtype=np.float64), dtype=like.dtype, device=like.device)
    return np.asarray(tile_rect, dtype=np.float64)


def tile_to_mosaic(boxes: ArrayT, tile_rect: np.ndarray | tuple[float, float, float, float]) -> ArrayT:
    """Map (..., 4) normalised xyxy boxes of a tile's image into normalised mosaic coordinates.

    ``tile_rect`` is the tile's (4,) normalised xyxy rectangle in the mosaic. A numpy array gives
    a float64 array, a tensor a tensor of its own dtype and device (differentiable).
    """
    if not isinstance(boxes, torch.Tensor):
        boxes = np.asarray(boxes, dtype=np.float64)
    rect = _as_rect(tile_rect, boxes)
    origin = rect[..., [0, 1, 0, 1]]
    scale = rect[..., [2, 3, 2, 3]] - origin
    return boxes * scale + origin


def mosaic_to_tile(boxes: ArrayT, tile_rect: np.ndarray | tuple[float, float, float, float]) -> ArrayT:
    """Inverse of :func:`tile_to_mosaic`: (..., 4) normalised mosaic xyxy -> the tile's own
    normalised xyxy (values outside [0, 1] where a box leaves the tile; clip if you need to)."""
    if not isinstance(boxes, torch.Tensor):
        boxes = np.asarray(boxes, dtype=np.float64)
    rect = _as_rect(tile_rect, boxes)
    origin = rect[..., [0, 1, 0, 1]]
    scale = rect[..., [2, 3, 2, 3]] - origin
    return (boxes - origin) / scale


@dataclass(frozen=True)
class Mosaic:
    """A composed mosaic.

    Attributes:
        image: the mosaic, RGB ``PIL.Image`` of size ``(width, height)``.
        grid: 1, 2 or 3.
        target_index: index (row-major) of the tile whose caption and crops are the targets.
        tile_rects: (grid * grid, 4) float64 normalised xyxy rectangles of the tiles in the mosaic,
            row-major. They are derived from the integer pixel cell edges, so they are exact
            for the pixels of the composed image.
    """

    image: Image.Image
    grid: int
    target_index: int
    tile_rects: np.ndarray

    @property
    def target_rect(self) -> np.ndarray:
        """(4,) normalised xyxy rectangle of the target tile."""
        return self.tile_rects[self.target_index]

    def to_mosaic(self, boxes: ArrayT, tile: int | None = None) -> ArrayT:
        """Target (or ``tile``) normalised xyxy boxes -> normalised mosaic xyxy."""
        return tile_to_mosaic(boxes, self.tile_rects[self.target_index if tile is None else tile])

    def to_tile(self, boxes: ArrayT, tile: int | None = None) -> ArrayT:
        """Normalised mosaic xyxy boxes -> the target (or ``tile``)'s normalised xyxy."""
        return mosaic_to_tile(boxes, self.tile_rects[self.target_index if tile is None else tile])


def _edges(total: int, grid: int) -> list[int]:
    return [round(i * total / grid) for i in range(grid + 1)]


def make_mosaic(
    images: list[Image.Image],
    grid: int,
    target_index: int,
    out_size: int | None = None,
    resample: Image.Resampling = Image.Resampling.BILINEAR,
) -> Mosaic:
    """Compose ``grid * grid`` images into one mosaic, each resized (stretched) to its cell.

    Args:
        images: exactly ``grid * grid`` PIL images, row-major; converted to RGB.
        grid: 1, 2 or 3 (any positive int works).
        target_index: which tile carries the caption and the ground-truth crops.
        out_size: side of a *square* mosaic in pixels (cells differ by at most one pixel when it
            is not divisible by ``grid``). ``None``: every cell has the target image's size, so
            the target keeps its resolution and aspect ratio and the mosaic is
            ``(grid * w, grid * h)``; with ``grid == 1`` that is the target image unchanged.

    Because normalised coordinates are used throughout, stretching a tile does not change its
    boxes' normalised coordinates; only :func:`tile_to_mosaic` is needed to place them.
    """
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    if len(images) != grid * grid:
        raise ValueError(f"a {grid}x{grid} mosaic needs {grid * grid} images, got {len(images)}")
    if not 0 <= target_index < grid * grid:
        raise ValueError(f"target_index {target_index} is not a tile of a {grid}x{grid} mosaic")
    if out_size is not None and out_size < grid:
        raise ValueError(f"out_size {out_size} is smaller than the grid {grid}")

    if out_size is None:
        cell_w, cell_h = images[target_index].size
        width, height = grid * cell_w, grid * cell_h
    else:
        width = height = int(out_size)
    xs, ys = _edges(width, grid), _edges(height, grid)

    canvas = Image.new("RGB", (width, height))
    rects = np.zeros((grid * grid, 4), dtype=np.float64)
    for idx, img in enumerate(images):
        r, c = divmod(idx, grid)
        x0, x1, y0, y1 = xs[c], xs[c + 1], ys[r], ys[r + 1]
        tile = img.convert("RGB") if img.mode != "RGB" else img
        if tile.size != (x1 - x0, y1 - y0):
            tile = tile.resize((x1 - x0, y1 - y0), resample=resample)
        canvas.paste(tile, (x0, y0))
        rects[idx] = (x0 / width, y0 / height, x1 / width, y1 / height)
    return Mosaic(image=canvas, grid=grid, target_index=target_index, tile_rects=rects)


def filter_initial_boxes(
    token_boxes: ArrayT,
    best_crop: ArrayT | np.ndarray,
    max_center_dist: float = 0.5,
    min_area_frac: float = 0.5,
    ensure_one: bool = False,
) -> ArrayT:
    """Which initial (per-token OWL-ViT) boxes text may select in a mosaic.

    Args:
        token_boxes: (N, 4) normalised xyxy boxes in mosaic coordinates.
        best_crop: (4,) normalised xyxy, in mosaic coordinates, of the target tile's annotated
            crop with the highest MOS.
        max_center_dist: a box is *far* when its centre lies outside ``best_crop`` grown by
            ``max_center_dist`` times the crop's own width on the left and on the right, and times
            its height above and below. The default 0.5 accepts centres within a region twice
            the crop's size around its centre; 0 requires the centre inside the crop.
        min_area_frac: a box is kept only if ``area(box ∩ best_crop) / area(best_crop)`` is at
            least this (0.5: the paper's "contain less than half the area of that box" dropped).
        ensure_one: if no box passes, keep the one that covers the largest fraction of the best
            crop (ties: the closest centre), so text selection is never empty.

    Returns:
        (N,) bool mask (numpy array or tensor, like ``token_boxes``): True = keep.

    Both rules are scale-relative, so they mean the same for a 1x1 and a 3x3 mosaic. Neither is
    differentiable; call it on detached boxes.
    """
    is_torch = isinstance(token_boxes, torch.Tensor)
    boxes = token_boxes.detach().cpu().double().numpy() if is_torch else np.asarray(token_boxes, np.float64)
    boxes = boxes.reshape(-1, 4)
    if isinstance(best_crop, torch.Tensor):
        best = best_crop.detach().cpu().double().numpy().reshape(4)
    else:
        best = np.asarray(best_crop, dtype=np.float64).reshape(4)

    bw, bh = max(best[2] - best[0], 0.0), max(best[3] - best[1], 0.0)
    bcx, bcy = (best[0] + best[2]) / 2, (best[1] + best[3]) / 2
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    dx, dy = np.abs(cx - bcx), np.abs(cy - bcy)
    near = (dx <= (0.5 + max_center_dist) * bw) & (dy <= (0.5 + max_center_dist) * bh)

    iw = np.clip(np.minimum(boxes[:, 2], best[2]) - np.maximum(boxes[:, 0], best[0]), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], best[3]) - np.maximum(boxes[:, 1], best[1]), 0, None)
    cover = iw * ih / max(bw * bh, 1e-12)
    keep = near & (cover >= min_area_frac)

    if ensure_one and len(boxes) > 0 and not keep.any():
        dist = np.hypot(dx, dy)
        order = np.lexsort((dist, -cover))  # last key is primary: most cover, then nearest
        keep[order[0]] = True

    if is_torch:
        return torch.as_tensor(keep, device=token_boxes.device)
    return keep


__all__ = [
    "GRID_CHOICES",
    "Mosaic",
    "filter_initial_boxes",
    "make_mosaic",
    "mosaic_to_tile",
    "sample_grid",
    "tile_to_mosaic",
]
