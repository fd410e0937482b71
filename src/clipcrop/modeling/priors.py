"""Priors: regions a crop should keep whole or leave out, each with a weight.

One mechanism for what media pipelines ask of a cropper (smartcrop's boost regions, Cloudinary's
faces and ``avoid``): a :class:`Prior` is a pixel box with a kind and a weight, from the user
(``keep=``/``avoid=`` boxes), from OWL-ViT (``avoid_text=``: what it detects for a text, from the
same encoded image) or from the face detector (``faces=True``: kept whole). Both modes rank with
the same penalty (:func:`prior_penalties`): the trained decoder's crops are re-ranked by it, the
training-free candidates get it as a term of their score.

The penalty of a crop is the sum over priors of ``weight`` times:

* keep: 1 when the region is not wholly inside the crop (at least :data:`WHOLE` of its area),
  else 0; a crop that cuts or drops a kept region loses to one that holds it, score for score;
* avoid: ``0.5 + 0.5 * share`` when more than :data:`TOUCH` of the region's area is inside the
  crop (``share``: that fraction), else 0.

Boxes are **pixels xyxy of the upright image**; ``weight`` is positive (1 by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from ..ops.box_ops import intersection_np

KINDS = ("keep", "avoid", "face")
#: a kept region counts as whole when this share of its area is inside the crop (rounding slack)
WHOLE = 0.98
#: an avoided region counts as touched when more than this share of it is inside the crop
TOUCH = 0.02


@dataclass(frozen=True)
class Prior:
    """A region for crops to keep whole (``keep``, ``face``) or to leave out (``avoid``).

    Attributes:
        box: (x0, y0, x1, y1) float pixels of the upright image.
        kind: ``"keep"``, ``"avoid"`` or ``"face"`` (a detected face, kept whole).
        weight: how much a crop loses for breaking it (> 0).
        source: where it came from: ``"user"``, ``"faces"`` or ``"text: <query>"``.
    """

    box: tuple[float, float, float, float]
    kind: str
    weight: float = 1.0
    source: str = "user"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ParameterError(f"prior kind {self.kind!r} is not one of {', '.join(KINDS)}")
        x0, y0, x1, y1 = self.box
        if not (np.isfinite([x0, y0, x1, y1]).all() and x1 > x0 and y1 > y0):
            raise ParameterError(f"prior box {list(self.box)} must be x0,y0,x1,y1 with x1 > x0 and y1 > y0")
        if not (np.isfinite(self.weight) and self.weight > 0):
            raise ParameterError(f"prior weight must be positive, got {self.weight}")

    @property
    def keeps(self) -> bool:
        return self.kind in ("keep", "face")

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "kind": self.kind,
            "weight": float(self.weight),
        }


def parse_box(text: str, kind: str) -> Prior:
    """``"x0,y0,x1,y1"`` or ``"x0,y0,x1,y1,weight"`` (pixels) -> :class:`Prior` of ``kind``.

    Raises:
        ParameterError: not four or five numbers, an empty box or a weight that is not positive.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (4, 5):
        raise ParameterError(f"{kind} box {text!r} must be x0,y0,x1,y1 or x0,y0,x1,y1,weight in pixels")
    weight = values[4] if len(values) == 5 else 1.0
    return Prior(tuple(values[:4]), kind, weight)  # type: ignore[arg-type]


def clip_priors(priors: Sequence[Prior], width: int, height: int) -> list[Prior]:
    """Priors clipped to the image; those left empty (wholly outside it) are dropped."""
    out = []
    for p in priors:
        x0, y0, x1, y1 = p.box
        box = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
        if box[2] > box[0] and box[3] > box[1]:
            out.append(Prior(box, p.kind, p.weight, p.source))
    return out


def share_inside(crops: np.ndarray, prior: Prior) -> np.ndarray:
    """(C,) share of ``prior``'s area inside each (C, 4) pixel xyxy crop."""
    box = np.array([prior.box], dtype=np.float64)
    area = (box[0, 2] - box[0, 0]) * (box[0, 3] - box[0, 1])
    return intersection_np(np.asarray(crops, dtype=np.float64).reshape(-1, 4), box)[:, 0] / area


def prior_penalties(crops: np.ndarray, priors: Sequence[Prior]) -> np.ndarray:
    """(C,) penalty of each (C, 4) pixel xyxy crop; see the module docstring. 0 without priors."""
    crops = np.asarray(crops, dtype=np.float64).reshape(-1, 4)
    penalty = np.zeros(len(crops))
    for p in priors:
        inside = share_inside(crops, p)
        if p.keeps:
            penalty += p.weight * (inside < WHOLE)
        else:
            penalty += p.weight * np.where(inside > TOUCH, 0.5 + 0.5 * inside, 0.0)
    return penalty


def keeps_all(crops: np.ndarray, priors: Sequence[Prior]) -> np.ndarray:
    """(C,) bool: each (C, 4) pixel xyxy crop holds every kept region whole."""
    crops = np.asarray(crops, dtype=np.float64).reshape(-1, 4)
    ok = np.ones(len(crops), dtype=bool)
    for p in priors:
        if p.keeps:
            ok &= share_inside(crops, p) >= WHOLE
    return ok
