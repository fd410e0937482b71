"""Priors: regions a crop should keep whole or leave out, each with a weight.

One mechanism for what media pipelines ask of a cropper (smartcrop's boost regions, Cloudinary's
faces and ``avoid``): a :class:`~clipcrop.crop_options.Prior` is a pixel box with a kind and a weight, from the user
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

import numpy as np

from ..crop_options import Prior
from ..ops.box_ops import intersection_np

#: a kept region counts as whole when this share of its area is inside the crop (rounding slack)
WHOLE = 0.98
#: an avoided region counts as touched when more than this share of it is inside the crop
TOUCH = 0.02


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


def clear_of_avoided(crops: np.ndarray, priors: Sequence[Prior]) -> np.ndarray:
    """(C,) bool: each (C, 4) pixel xyxy crop touches no avoided region (at most :data:`TOUCH`
    of its area inside); all True without avoided regions."""
    crops = np.asarray(crops, dtype=np.float64).reshape(-1, 4)
    ok = np.ones(len(crops), dtype=bool)
    for p in priors:
        if not p.keeps:
            ok &= share_inside(crops, p) <= TOUCH
    return ok
