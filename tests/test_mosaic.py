"""Mosaic augmentation: composition, tile <-> mosaic box maps, initial-box filtering, grid sampling."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from clipcrop.data.mosaic import (
    filter_initial_boxes,
    make_mosaic,
    mosaic_to_tile,
    sample_grid,
    tile_to_mosaic,
)


def _images(n: int, size: tuple[int, int] = (30, 20)) -> list[Image.Image]:
    return [Image.new("RGB", size, (10 * i, 255 - 10 * i, 7 * i)) for i in range(n)]


@pytest.mark.parametrize("grid", [1, 2, 3])
@pytest.mark.parametrize("out_size", [None, 100])
def test_round_trip_and_layout(grid: int, out_size: int | None):
    imgs = _images(grid * grid)
    target = grid * grid - 1
    m = make_mosaic(imgs, grid, target, out_size)
    width, height = m.image.size
    if out_size is None:
        assert (width, height) == (30 * grid, 20 * grid)
    else:
        assert (width, height) == (out_size, out_size)
    # the tiles cover the mosaic row-major, edge to edge
    assert m.tile_rects.shape == (grid * grid, 4)
    assert np.allclose(m.tile_rects[0, :2], 0) and np.allclose(m.tile_rects[-1, 2:], 1)
    for idx, rect in enumerate(m.tile_rects):
        r, c = divmod(idx, grid)
        if c + 1 < grid:
            assert rect[2] == m.tile_rects[idx + 1, 0]
        if r + 1 < grid:
            assert rect[3] == m.tile_rects[idx + grid, 1]
        # each tile shows its own image (centre pixel colour)
        cx, cy = (rect[0] + rect[2]) / 2 * width, (rect[1] + rect[3]) / 2 * height
        assert m.image.getpixel((int(cx), int(cy))) == imgs[idx].getpixel((0, 0))

    rng = np.random.default_rng(grid)
    xy0 = rng.uniform(0, 0.5, (7, 2))
    boxes = np.concatenate([xy0, xy0 + rng.uniform(0.1, 0.5, (7, 2))], axis=1)
    for tile in range(grid * grid):
        rect = m.tile_rects[tile]
        there = tile_to_mosaic(boxes, rect)
        assert np.allclose(mosaic_to_tile(there, rect), boxes, atol=1e-12)
        # inside the tile's rectangle
        assert (there[:, [0, 2]] >= rect[0] - 1e-12).all() and (there[:, [0, 2]] <= rect[2] + 1e-12).all()
    # the whole tile maps to its rectangle; torch keeps dtype and round-trips too
    assert np.allclose(m.to_mosaic(np.array([0.0, 0.0, 1.0, 1.0])), m.target_rect)
    tb = torch.tensor(boxes, dtype=torch.float32)
    out = m.to_mosaic(tb)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert torch.allclose(m.to_tile(out), tb, atol=1e-6)


def test_tile_to_mosaic_known_values():
    rect = (0.5, 0.0, 1.0, 0.5)  # top-right tile of a 2x2 mosaic
    assert np.allclose(
        tile_to_mosaic(np.array([[0.0, 0.0, 1.0, 1.0], [0.2, 0.4, 0.6, 0.8]]), rect),
        [[0.5, 0, 1, 0.5], [0.6, 0.2, 0.8, 0.4]],
    )


def test_make_mosaic_rejects_bad_arguments():
    with pytest.raises(ValueError):
        make_mosaic(_images(3), 2, 0)
    with pytest.raises(ValueError):
        make_mosaic(_images(4), 2, 4)


def test_grid_one_keeps_the_image():
    img = _images(1, (17, 11))[0]
    m = make_mosaic([img], 1, 0)
    assert m.image.size == (17, 11) and np.allclose(m.tile_rects, [[0, 0, 1, 1]])


# best crop (0.1, 0.1, 0.3, 0.3): centre 0.2, size 0.2; default rule: centre within 0.2 of it per axis,
# and the box covers at least half of the crop.
BEST = np.array([0.1, 0.1, 0.3, 0.3])
TOKENS = np.array(
    [
        [0.08, 0.08, 0.32, 0.32],  # holds the crop, same centre            keep
        [0.10, 0.10, 0.21, 0.30],  # covers 55 %                            keep
        [0.10, 0.10, 0.19, 0.30],  # covers 45 %                            drop
        [0.00, 0.00, 1.00, 1.00],  # the whole mosaic: centre 0.3 away      drop (far)
        [0.00, 0.00, 0.50, 0.50],  # holds the crop, centre 0.05 away       keep
        [0.60, 0.60, 0.90, 0.90],  # elsewhere                              drop
        [0.13, 0.13, 0.51, 0.51],  # covers 72 %, centre 0.12 away          keep (dropped if dist 0)
        [0.00, 0.00, 0.70, 0.70],  # holds the crop, centre 0.15 away       keep (dropped if dist 0)
    ]
)


def test_filter_initial_boxes_hand_built():
    keep = filter_initial_boxes(TOKENS, BEST)
    assert keep.tolist() == [True, True, False, False, True, False, True, True]
    strict = filter_initial_boxes(TOKENS, BEST, max_center_dist=0.0)
    assert strict.tolist() == [True, True, False, False, True, False, False, False]
    t = filter_initial_boxes(torch.tensor(TOKENS, dtype=torch.float32), torch.tensor(BEST))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.bool and t.tolist() == keep.tolist()


def test_filter_ensure_one():
    far = TOKENS[[2, 3, 5]]
    assert not filter_initial_boxes(far, BEST).any()
    keep = filter_initial_boxes(far, BEST, ensure_one=True)
    assert keep.tolist() == [False, True, False]  # the whole mosaic covers the most of the crop
    assert filter_initial_boxes(np.zeros((0, 4)), BEST, ensure_one=True).shape == (0,)


def test_sample_grid_is_uniform():
    rng = np.random.default_rng(1234)
    counts = Counter(sample_grid(rng) for _ in range(3000))
    assert set(counts) == {1, 2, 3}
    for g in (1, 2, 3):
        assert abs(counts[g] / 3000 - 1 / 3) < 0.04
    r = random.Random(5)
    counts = Counter(sample_grid(r) for _ in range(3000))
    assert all(abs(counts[g] / 3000 - 1 / 3) < 0.04 for g in (1, 2, 3))
    # seeded generators reproduce
    a = [sample_grid(np.random.default_rng(9)) for _ in range(3)]
    assert len(set(a)) == 1
