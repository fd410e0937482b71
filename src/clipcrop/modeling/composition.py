"""Training-free cropping: candidate crops around ``b_u`` ranked by a composition score.

Used when the checkpoint holds plain OWL-ViT weights (no trained decoder). Candidates are grid
anchors that contain the subject box with margins: several sizes (the crop's side is 1.15x to
3x the subject's, capped by the image) times several placements (subject on the left/centre/
right third, top/centre/bottom third), plus the whole image; with an aspect ratio each anchor
is built in that ratio. Every candidate gets a score in [0, 1], the weighted sum of:

=================  ======  ==================================================================
term               weight  what it rewards
=================  ======  ==================================================================
``containment``    0.35    the subject box lies inside the crop (fraction of its area inside)
``placement``      0.15    the subject's centre near a rule-of-thirds point or the centre
``balance``        0.15    left/right and top/bottom margins around the subject not lopsided
``no_cut``         0.20    other confidently detected objects are either fully in or fully out
``size``           0.15    subject fills 15-60% of the crop, and the crop keeps >= 20% of the image
=================  ======  ==================================================================

All geometry here is normalised xyxy relative to the image, except where noted, with an
``image_aspect`` (width / height) so that "square" and thirds are judged in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ops.box_ops import intersection_np, iou_np

WEIGHTS = {"containment": 0.35, "placement": 0.15, "balance": 0.15, "no_cut": 0.20, "size": 0.15}
SCALES = (1.15, 1.35, 1.6, 2.0, 2.5, 3.0)
PLACEMENTS = (1 / 3, 0.5, 2 / 3)


@dataclass
class Candidates:
    """Candidate crops: (C, 4) normalised xyxy boxes and (C,) composition scores in [0, 1]."""

    boxes: np.ndarray
    scores: np.ndarray


def generate_candidates(
    subject: np.ndarray, width: int, height: int, ratio: float | None = None
) -> np.ndarray:
    """Crops that contain ``subject`` (normalised xyxy) with margins; (C, 4) normalised xyxy.

    Computed in pixels so that the aspect ratio is exact, then normalised back.
    """
    sx0, sy0, sx1, sy1 = subject * np.array([width, height, width, height], dtype=np.float64)
    sw, sh = max(sx1 - sx0, 1.0), max(sy1 - sy0, 1.0)
    scx, scy = (sx0 + sx1) / 2, (sy0 + sy1) / 2
    out = [[0.0, 0.0, float(width), float(height)]]
    for s in SCALES:
        cw, ch = sw * s, sh * s
        if ratio is not None:  # grow the short side to the ratio
            if cw / ch < ratio:
                cw = ch * ratio
            else:
                ch = cw / ratio
        if cw > width:
            cw = float(width)
            if ratio is not None:
                ch = cw / ratio
        if ch > height:
            ch = float(height)
            if ratio is not None:
                cw = ch * ratio
        for px in PLACEMENTS:
            for py in PLACEMENTS:
                x0 = np.clip(scx - px * cw, 0.0, width - cw)
                y0 = np.clip(scy - py * ch, 0.0, height - ch)
                out.append([x0, y0, x0 + cw, y0 + ch])
    boxes = np.asarray(out, dtype=np.float64)
    if ratio is not None:
        from ..ops.aspect import fit_aspect

        boxes[0] = fit_aspect(boxes[0], ratio, width, height)
    boxes /= np.array([width, height, width, height], dtype=np.float64)
    boxes = np.clip(boxes, 0.0, 1.0)
    # exact duplicates come from clipping at the image border
    _, unique = np.unique(np.round(boxes, 6), axis=0, return_index=True)
    return boxes[np.sort(unique)]


def composition_scores(
    crops: np.ndarray, subject: np.ndarray, others: np.ndarray, image_aspect: float
) -> np.ndarray:
    """Score (C, 4) normalised xyxy crops; see the module docstring for the terms.

    Args:
        crops: (C, 4) candidate crops.
        subject: (4,) the subject box ``b_u``.
        others: (K, 4) other confidently detected objects (may be empty).
        image_aspect: image width / height, to measure distances in pixel proportions.
    """
    terms = composition_terms(crops, subject, others, image_aspect)
    return sum(WEIGHTS[name] * value for name, value in terms.items())


def composition_terms(
    crops: np.ndarray, subject: np.ndarray, others: np.ndarray, image_aspect: float
) -> dict:
    """Each term of :func:`composition_scores` as a (C,) array in [0, 1]."""
    crops = np.asarray(crops, dtype=np.float64).reshape(-1, 4)
    subject = np.asarray(subject, dtype=np.float64)
    cw = np.maximum(crops[:, 2] - crops[:, 0], 1e-9)
    ch = np.maximum(crops[:, 3] - crops[:, 1], 1e-9)
    s_area = max((subject[2] - subject[0]) * (subject[3] - subject[1]), 1e-9)
    inter = intersection_np(crops, subject[None])[:, 0]
    containment = inter / s_area

    # placement: subject centre in crop-relative coordinates vs thirds and centre (in pixels)
    scx = ((subject[0] + subject[2]) / 2 - crops[:, 0]) / cw
    scy = ((subject[1] + subject[3]) / 2 - crops[:, 1]) / ch
    points = np.array([[1 / 3, 1 / 3], [2 / 3, 1 / 3], [1 / 3, 2 / 3], [2 / 3, 2 / 3], [0.5, 0.5]])
    crop_aspect = cw * image_aspect / ch
    dx = (scx[:, None] - points[None, :, 0]) * np.sqrt(crop_aspect)[:, None]
    dy = (scy[:, None] - points[None, :, 1]) / np.sqrt(crop_aspect)[:, None]
    placement = np.clip(1.0 - np.sqrt(dx**2 + dy**2).min(axis=1) / 0.5, 0.0, 1.0)

    # balance: margins on opposite sides similar (ratio of the smaller to the larger)
    left = np.clip(subject[0] - crops[:, 0], 0, None)
    right = np.clip(crops[:, 2] - subject[2], 0, None)
    top = np.clip(subject[1] - crops[:, 1], 0, None)
    bottom = np.clip(crops[:, 3] - subject[3], 0, None)
    balance = 0.5 * (smaller_over_larger(left, right) + smaller_over_larger(top, bottom))

    # no_cut: an object is "cut" when 10%..90% of it is inside the crop
    if len(others):
        others = np.asarray(others, dtype=np.float64).reshape(-1, 4)
        o_area = np.maximum((others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]), 1e-9)
        frac = intersection_np(crops, others) / o_area[None, :]
        cut = ((frac > 0.1) & (frac < 0.9)).mean(axis=1)
        no_cut = 1.0 - cut
    else:
        no_cut = np.ones(len(crops))

    # size: subject fills 15-60% of the crop, crop keeps >= 20% of the image
    fill = s_area / (cw * ch)
    fill_score = np.where(
        fill < 0.15, fill / 0.15, np.where(fill > 0.6, np.clip((1.0 - fill) / 0.4, 0, 1), 1.0)
    )
    keep_score = np.clip(cw * ch / 0.2, 0.0, 1.0)
    size = 0.7 * fill_score + 0.3 * keep_score
    return {
        "containment": containment,
        "placement": placement,
        "balance": balance,
        "no_cut": no_cut,
        "size": size,
    }


def rank_candidates(
    subject: np.ndarray, others: np.ndarray, width: int, height: int, ratio: float | None = None
) -> Candidates:
    """Generate candidates around ``subject`` and score them (unsorted)."""
    boxes = generate_candidates(subject, width, height, ratio)
    scores = composition_scores(boxes, subject, others, width / height)
    return Candidates(boxes=boxes, scores=np.asarray(scores, dtype=np.float64))


#: sides of the crops that fill up a short list, as fractions of the image's sides
FILL_FRACTIONS = (0.35, 0.5, 0.65, 0.8, 0.9)


def fill_candidates(subject: np.ndarray, width: int, height: int, ratio: float | None = None) -> Candidates:
    """Crops spread over the whole image (five sizes x a 3 x 3 grid of places), scored like
    :func:`rank_candidates` around ``subject``: distinct alternatives for when the candidates of
    a mode round to fewer distinct crops than were asked for. Normalised xyxy, unsorted."""
    out = []
    for f in FILL_FRACTIONS:
        cw, ch = f * width, f * height
        if ratio is not None:  # same area, in the ratio, inside the image
            cw, ch = np.sqrt(cw * ch * ratio), np.sqrt(cw * ch / ratio)
            shrink = min(1.0, width / cw, height / ch)
            cw, ch = cw * shrink, ch * shrink
        for x0 in (0.0, (width - cw) / 2, width - cw):
            for y0 in (0.0, (height - ch) / 2, height - ch):
                out.append([x0, y0, x0 + cw, y0 + ch])
    boxes = np.asarray(out, dtype=np.float64) / np.array([width, height, width, height], dtype=np.float64)
    boxes = np.clip(boxes, 0.0, 1.0)
    scores = composition_scores(
        boxes, np.asarray(subject, dtype=np.float64), np.zeros((0, 4)), width / height
    )
    return Candidates(boxes=boxes, scores=np.asarray(scores, dtype=np.float64))


def smaller_over_larger(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise min(a, b) / max(a, b) of non-negative margins; 1 where both are 0 (balanced)."""
    hi = np.maximum(a, b)
    return np.where(hi > 1e-9, np.minimum(a, b) / np.maximum(hi, 1e-9), 1.0)


def salient_objects(
    boxes: np.ndarray, probs: np.ndarray, threshold: float = 0.1, max_objects: int = 10
) -> np.ndarray:
    """Confident, de-duplicated detections: (K, 4) normalised xyxy from token boxes and probabilities."""
    order = np.argsort(-probs)
    keep: list[int] = []
    for i in order:
        if probs[i] < threshold or len(keep) >= max_objects:
            break
        if keep and iou_np(boxes[i][None], boxes[keep]).max() > 0.5:
            continue
        keep.append(int(i))
    return boxes[keep] if keep else np.zeros((0, 4))
