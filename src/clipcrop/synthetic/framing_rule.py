"""The shapes world's framing rule: how its "photographers" frame a subject.

The shapes benchmark's GAIC-format annotations (the MOS of every annotated crop) and its
human-like test boxes come from this rule. It encodes preferences that are visible in the
pictures and learnable from the annotations, but that no generic rule of thumb knows:

* **the frame follows the kind** (:data:`KIND_FRAMES`): every shape kind has its own frame shape
  (width / height: stars and rings tall, squares and triangles wide, circles square) and its own
  coverage (the subject's area over the frame's area: rings loose, squares tight);
* **lead room**: triangles point left or right (:attr:`~clipcrop.synthetic.shapes.ShapeObject.facing`,
  seen in the picture, never said in a caption); :data:`LEAD_SHARE` of the free width goes in
  front of the point, the rest behind it;
* **headroom** for stars: :data:`HEADROOM_SHARE` of the free height above them;
* **two subjects** share a frame shaped like their union box (clamped to
  :data:`GROUP_ASPECT_RANGE`), at coverage :data:`GROUP_COVERAGE`, centred.

The frame is then kept inside the picture: it shrinks (keeping its shape) when larger than the
picture, grows to hold the whole subject with :data:`MIN_GAP` on every side, then slides
inside the picture. The *human-like* frames of a query are that frame and its looser and
tighter siblings (:data:`HUMAN_COVERAGE_SCALES`), like three annotators who agree on the
framing and disagree a little on how close to stand.

A crop's quality is ``inclusion**4 * IoU(crop, ideal frame)``, ``inclusion`` being the share of
the subject's area inside the crop; GAIC MOS is ``1 + 4 * quality``.

This module is deliberately independent of :mod:`clipcrop.modeling.composition`, the generic
ranking of training-free mode that the learned decoder must beat: it imports nothing from it
and shares none of its ideas or names (no thirds, no symmetric margins, no penalty for cutting
neighbours, no candidate scales). Training-free mode cannot know that a triangle wants room in
front of its point, or that a ring is framed loosely in portrait: only a model that learns from
the annotations can.

Boxes are ``x0, y0, x1, y1`` float pixels of the scene image (x1/y1 exclusive).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ops.box_ops import intersection_np, iou_np


@dataclass(frozen=True)
class KindFrame:
    """How one kind of subject is framed.

    Attributes:
        aspect: frame width / height.
        coverage: subject area / frame area.
        lead: for kinds that point a way, the share of the free width in front of the point
            (0.5: the subject centred across).
        headroom: the share of the free height above the subject (0.5: centred vertically).
    """

    aspect: float
    coverage: float
    lead: float = 0.5
    headroom: float = 0.5


LEAD_SHARE = 0.82
HEADROOM_SHARE = 0.75
#: shape kind -> its frame
KIND_FRAMES: dict[str, KindFrame] = {
    "circle": KindFrame(aspect=1.0, coverage=0.30),
    "square": KindFrame(aspect=3 / 2, coverage=0.45),
    "triangle": KindFrame(aspect=2.0, coverage=0.20, lead=LEAD_SHARE),
    "star": KindFrame(aspect=3 / 5, coverage=0.24, headroom=HEADROOM_SHARE),
    "ring": KindFrame(aspect=3 / 4, coverage=0.14),
}
GROUP_COVERAGE = 0.45
GROUP_ASPECT_RANGE = (2 / 3, 3 / 2)
#: free space kept on every side of the subject, as a share of its side
MIN_GAP = 0.04
#: coverage of the human-like frames relative to the ideal one
HUMAN_COVERAGE_SCALES = (1.0, 0.8, 1.25)
#: human-like frames this similar (IoU) to an earlier one are dropped
DUPLICATE_IOU = 0.92


@dataclass(frozen=True)
class Subject:
    """What is framed: its box (xyxy pixels) and the kind and facing of each of its objects.

    ``facing`` is ``"left"``/``"right"`` for kinds that point a way, ``""`` otherwise.
    """

    box: tuple[float, float, float, float]
    kinds: tuple[str, ...]
    facings: tuple[str, ...]


def frame_for(subject: Subject) -> tuple[KindFrame, str]:
    """The frame of a subject and the way it points (``"left"``, ``"right"`` or ``""``).

    One object: its kind's frame (:data:`KIND_FRAMES`). Several: a centred group frame shaped
    like their union box.
    """
    if len(subject.kinds) == 1:
        return KIND_FRAMES[subject.kinds[0]], subject.facings[0]
    x0, y0, x1, y1 = subject.box
    lo, hi = GROUP_ASPECT_RANGE
    aspect = float(np.clip((x1 - x0) / max(y1 - y0, 1e-9), lo, hi))
    return KindFrame(aspect=aspect, coverage=GROUP_COVERAGE), ""


def _frame_size(
    sw: float, sh: float, frame: KindFrame, coverage_scale: float, width: int, height: int
) -> tuple[float, float]:
    """(frame width, frame height): the kind's shape and coverage, no larger than the picture,
    at least the subject plus :data:`MIN_GAP` (the shape gives way when both cannot hold)."""
    area = sw * sh / (frame.coverage * coverage_scale)
    fw, fh = np.sqrt(area * frame.aspect), np.sqrt(area / frame.aspect)
    shrink = min(1.0, width / fw, height / fh)
    fw, fh = fw * shrink, fh * shrink
    need_w, need_h = sw * (1 + 2 * MIN_GAP), sh * (1 + 2 * MIN_GAP)
    grow = max(1.0, need_w / fw, need_h / fh)
    fw, fh = fw * grow, fh * grow
    return float(min(fw, width)), float(min(fh, height))


def framed_crop(subject: Subject, width: int, height: int, coverage_scale: float = 1.0) -> np.ndarray:
    """The rule's frame for ``subject`` in a ``width`` x ``height`` picture -> (4,) xyxy pixels.

    ``coverage_scale`` < 1 stands further back (a looser frame), > 1 closer.
    """
    frame, facing = frame_for(subject)
    sx0, sy0, sx1, sy1 = (float(v) for v in subject.box)
    sw, sh = max(sx1 - sx0, 1e-9), max(sy1 - sy0, 1e-9)
    fw, fh = _frame_size(sw, sh, frame, coverage_scale, width, height)
    spare_w, spare_h = max(fw - sw, 0.0), max(fh - sh, 0.0)
    ahead = frame.lead if facing in ("left", "right") else 0.5
    # the share of spare width on the left: behind a right-pointing subject, ahead of a left one
    left_share = 1.0 - ahead if facing == "right" else ahead
    x0 = sx0 - left_share * spare_w
    y0 = sy0 - frame.headroom * spare_h
    x0 = float(np.clip(x0, 0.0, max(width - fw, 0.0)))
    y0 = float(np.clip(y0, 0.0, max(height - fh, 0.0)))
    return np.array([x0, y0, min(x0 + fw, width), min(y0 + fh, height)], dtype=np.float64)


def human_crops(subject: Subject, width: int, height: int) -> np.ndarray:
    """The human-like frames of a subject: the ideal frame first, then its looser and tighter
    siblings (:data:`HUMAN_COVERAGE_SCALES`), near-duplicates dropped -> (K, 4) xyxy pixels."""
    out: list[np.ndarray] = []
    for scale in HUMAN_COVERAGE_SCALES:
        box = framed_crop(subject, width, height, scale)
        if out and iou_np(box, np.asarray(out)).max() > DUPLICATE_IOU:
            continue
        out.append(box)
    return np.round(np.asarray(out), 2)


def framing_quality(crops: np.ndarray, subject: Subject, width: int, height: int) -> np.ndarray:
    """Quality in [0, 1] of (C, 4) xyxy pixel crops: ``inclusion**4 * IoU(crop, ideal frame)``."""
    crops = np.asarray(crops, dtype=np.float64).reshape(-1, 4)
    box = np.asarray(subject.box, dtype=np.float64)
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
    inclusion = intersection_np(crops, box[None])[:, 0] / area
    ideal = framed_crop(subject, width, height)
    return np.clip(inclusion**4 * iou_np(crops, ideal[None])[:, 0], 0.0, 1.0)


__all__ = [
    "GROUP_COVERAGE",
    "HEADROOM_SHARE",
    "HUMAN_COVERAGE_SCALES",
    "KIND_FRAMES",
    "KindFrame",
    "LEAD_SHARE",
    "Subject",
    "frame_for",
    "framed_crop",
    "framing_quality",
    "human_crops",
]
