"""Aspect ratios: parsing ``W:H``, fitting a box to a ratio, rounding to pixels.

Numpy only (no torch), so that the CLI and the service can validate ``--aspect`` before any
model is imported. Boxes are xyxy in pixels of the upright image.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError


def parse_aspect(aspect: str | float | tuple[float, float] | None) -> float | None:
    """Parse ``"W:H"``, ``"W/H"``, a float or a ``(w, h)`` pair into width / height.

    ``None``, ``"free"`` and ``""`` mean no constraint. Raises :class:`ParameterError`
    for anything not strictly positive and finite (``"0:1"``, ``"a:b"``, ``-1``).
    """
    if aspect is None:
        return None
    if isinstance(aspect, str):
        text = aspect.strip().lower()
        if text in ("", "free", "none", "any"):
            return None
        for sep in (":", "/", "x"):
            if sep in text:
                parts = text.split(sep)
                break
        else:
            parts = [text, "1"]
        if len(parts) != 2:
            raise ParameterError(f"aspect ratio {aspect!r} is not of the form W:H (for example 16:9)")
        try:
            w, h = float(parts[0]), float(parts[1])
        except ValueError:
            raise ParameterError(
                f"aspect ratio {aspect!r} is not of the form W:H (for example 16:9)"
            ) from None
    elif isinstance(aspect, tuple | list):
        if len(aspect) != 2:
            raise ParameterError(f"aspect ratio {aspect!r} must be a (width, height) pair")
        w, h = float(aspect[0]), float(aspect[1])
    else:
        w, h = float(aspect), 1.0
    if not (np.isfinite(w) and np.isfinite(h)) or w <= 0 or h <= 0:
        raise ParameterError(f"aspect ratio {aspect!r} must have a positive, finite width and height")
    ratio = w / h
    if ratio < 1e-3 or ratio > 1e3:
        raise ParameterError(f"aspect ratio {aspect!r} is too extreme (allowed 1:1000 to 1000:1)")
    return ratio


def fit_aspect(box: np.ndarray, ratio: float, width: float, height: float) -> np.ndarray:
    """Adjust one xyxy pixel box to width/height == ``ratio`` inside a ``width x height`` image.

    Grows before it shrinks: the short side is extended around the box's centre (shifted to stay
    inside the image); only if that cannot fit is the long side reduced. Keeps the centre where
    the image allows, so the crop still shows what the box showed.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
    if w / h < ratio:
        w = h * ratio  # grow width
    else:
        h = w / ratio  # grow height
    if w > width:  # too wide for the image: shrink both
        w = float(width)
        h = w / ratio
    if h > height:
        h = float(height)
        w = h * ratio
    nx0 = min(max(cx - w / 2, 0.0), width - w)
    ny0 = min(max(cy - h / 2, 0.0), height - h)
    return np.array([nx0, ny0, nx0 + w, ny0 + h], dtype=np.float64)


def round_box(
    box: np.ndarray, width: int, height: int, ratio: float | None = None
) -> tuple[int, int, int, int]:
    """Round an xyxy pixel box to ints inside the image, at least 1 px each way.

    With ``ratio`` the rounded box keeps width/height within one pixel of the ratio: the height
    is derived from the rounded width instead of being rounded independently.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    w = min(max(round(x1 - x0), 1), width)
    h = min(max(round(y1 - y0), 1), height)
    if ratio is not None:
        h_from_w = round(w / ratio)
        if 1 <= h_from_w <= height:
            h = h_from_w
        else:
            h = min(max(round(h), 1), height)
            w = min(max(round(h * ratio), 1), width)
    ix0 = min(max(round(x0), 0), width - w)
    iy0 = min(max(round(y0), 0), height - h)
    return int(ix0), int(iy0), int(ix0 + w), int(iy0 + h)


#: default smallest crop: a crop must keep at least this share of the image's area ...
MIN_CROP_AREA = 0.05
#: ... and this many pixels on each side (a 1-px sliver is never a useful crop)
MIN_CROP_SIDE = 16


def enforce_min_size(
    box: np.ndarray,
    width: float,
    height: float,
    *,
    min_area: float = MIN_CROP_AREA,
    min_side: float = MIN_CROP_SIDE,
    ratio: float | None = None,
) -> np.ndarray:
    """Grow one xyxy pixel box around its centre to the minimum crop size, inside the image.

    The minimum is ``min_area`` of the image's area and ``min_side`` pixels per side (each
    capped by the image itself). With ``ratio`` (the box already has it: call after
    :func:`fit_aspect`) both sides grow together so the ratio holds; a box already large enough
    is returned unchanged.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
    need_area = min_area * width * height
    side_w, side_h = min(min_side, width), min(min_side, height)
    if ratio is not None:
        grow = max(1.0, np.sqrt(need_area / (w * h)), side_w / w, side_h / h)
        w, h = w * grow, h * grow
        shrink = min(1.0, width / w, height / h)  # the ratio's largest box is the ceiling
        w, h = w * shrink, h * shrink
    else:
        w, h = max(w, side_w), max(h, side_h)
        if w * h < need_area:
            grow = np.sqrt(need_area / (w * h))
            w, h = min(w * grow, width), min(h * grow, height)
            # one side hit the image border: the other takes the rest of the area
            w, h = min(max(w, need_area / h), width), min(max(h, need_area / w), height)
    nx0 = min(max(cx - w / 2, 0.0), width - w)
    ny0 = min(max(cy - h / 2, 0.0), height - h)
    return np.array([nx0, ny0, nx0 + w, ny0 + h], dtype=np.float64)
