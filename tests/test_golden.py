"""Golden outputs (tests/golden.py): detections, union boxes and crops of the seeded calibrated
tiny checkpoints on three real photos must not drift."""

from __future__ import annotations

import json

import pytest
from golden import GOLDEN, compute


def _close(a, b, path: str) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            _close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, bool) or a is None or isinstance(a, str):
        assert a == b, path
    elif isinstance(a, int) and isinstance(b, int):
        assert abs(a - b) <= 1, f"{path}: {a} vs golden {b}"  # a pixel of rounding
    else:
        assert float(a) == pytest.approx(float(b), rel=1e-4, abs=1e-4), f"{path}: {a} vs golden {b}"


def test_outputs_match_the_golden_file(tiny_backbone_dir, tiny_clipcrop_dir):
    golden = json.loads(GOLDEN.read_text())
    _close(compute(tiny_backbone_dir, tiny_clipcrop_dir), golden, "outputs")
