"""The shapes benchmark's rows beyond ``evaluate --baselines``: oracles, splits and ambiguity.

Every function works on the query manifests ``generate.py`` writes (their ``boxes`` are the
human-like target crops, ``subject_box`` / ``other_boxes`` the true object boxes, ``split`` /
``unseen_pair`` / ``unseen_template`` what is held out) and on *top crops*: one (4,) xyxy pixel
box per manifest entry and method. No model is needed here, so all of it is tested on
hand-made boxes.

Oracle rows (ceilings, not methods: they read the labels):

* ``oracle_centred``: the square centred on the true subject box at one fill (subject area /
  crop area) for all queries, the fill chosen on validation scenes (:func:`best_centred_fill`);
* ``oracle_training_free``: training-free mode's composition ranking given the true subject box
  and the true other objects (its top-ranked candidate);
* ``oracle_query_blind``: per scene, the one crop (grid candidates and every target crop of the
  scene) that maximises the scene's summed IoU-Mean over its queries: the best any method that
  ignores the query could do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from clipcrop.ops.box_ops import iou_np

#: fills tried for ``oracle_centred`` on validation scenes
CENTRED_FILLS = tuple(round(0.05 * k, 2) for k in range(2, 13))
#: per-query splits of ``by_split``
SPLITS = ("seen", "unseen", "unseen_pair", "unseen_template")

Box = Sequence[float]


def iou_mean_each(tops: Sequence[Box], entries: Sequence[Mapping]) -> np.ndarray:
    """(Q,) IoU-Mean of each top crop with its entry's target boxes."""
    return np.asarray(
        [iou_np(np.asarray(t), np.asarray(e["boxes"]))[0].mean() for t, e in zip(tops, entries, strict=True)]
    )


def iou_max_each(tops: Sequence[Box], entries: Sequence[Mapping]) -> np.ndarray:
    """(Q,) IoU-Max of each top crop with its entry's target boxes."""
    return np.asarray(
        [iou_np(np.asarray(t), np.asarray(e["boxes"]))[0].max() for t, e in zip(tops, entries, strict=True)]
    )


def method_table(tops: Mapping[str, Sequence[Box]], entries: Sequence[Mapping]) -> dict:
    """method -> ``{"iou_mean", "iou_max"}`` (rounded to 4 decimals)."""
    return {
        m: {
            "iou_mean": round(float(iou_mean_each(t, entries).mean()), 4),
            "iou_max": round(float(iou_max_each(t, entries).mean()), 4),
        }
        for m, t in tops.items()
    }


def in_split(entry: Mapping, split: str) -> bool:
    """Whether a query belongs to ``split`` (:data:`SPLITS`)."""
    if split in ("seen", "unseen"):
        return entry.get("split") == split
    return bool(entry.get(split))


def by_split(tops: Mapping[str, Sequence[Box]], entries: Sequence[Mapping]) -> dict:
    """split -> method -> ``{"iou_mean", "n"}`` for the splits that have queries."""
    out: dict = {}
    for split in SPLITS:
        keep = [i for i, e in enumerate(entries) if in_split(e, split)]
        if not keep:
            continue
        sub = [entries[i] for i in keep]
        out[split] = {
            m: {"iou_mean": round(float(iou_mean_each([t[i] for i in keep], sub).mean()), 4), "n": len(keep)}
            for m, t in tops.items()
        }
    return out


def by_kind(tops: Mapping[str, Sequence[Box]], entries: Sequence[Mapping]) -> dict:
    """query kind (single / pair / image) -> method -> IoU-Mean, plus ``n``."""
    out: dict = {}
    for kind in sorted({e.get("kind", "?") for e in entries}):
        keep = [i for i, e in enumerate(entries) if e.get("kind", "?") == kind]
        sub = [entries[i] for i in keep]
        row = {m: round(float(iou_mean_each([t[i] for i in keep], sub).mean()), 4) for m, t in tops.items()}
        out[kind] = row | {"n": len(keep)}
    return out


def ambiguity(tops: Sequence[Box], entries: Sequence[Mapping]) -> tuple[float, int]:
    """Share of scenes with two single-object queries where *each* query's top crop overlaps its
    own targets more (IoU-Mean) than the other query's targets.

    Two crops that merely differ do not count: each must be on its own object.
    Returns (fraction, scenes checked); (nan, 0) without such scenes.
    """
    by_scene: dict[int, list[int]] = {}
    for i, e in enumerate(entries):
        if e.get("kind") == "single":
            by_scene.setdefault(int(e["scene"]), []).append(i)
    pairs = [v for v in by_scene.values() if len(v) == 2]
    if not pairs:
        return float("nan"), 0

    def own_wins(a: int, b: int) -> bool:
        top = np.asarray(tops[a], dtype=np.float64)
        own = iou_np(top, np.asarray(entries[a]["boxes"]))[0].mean()
        other = iou_np(top, np.asarray(entries[b]["boxes"]))[0].mean()
        return bool(own > other)

    hits = sum(own_wins(a, b) and own_wins(b, a) for a, b in pairs)
    return hits / len(pairs), len(pairs)


def centred_square(subject: Box, fill: float, width: int, height: int) -> np.ndarray:
    """The square centred on ``subject`` (xyxy pixels) whose area makes the subject fill ``fill``
    of it, at least the subject's longer side, at most the picture's shorter side, slid inside."""
    x0, y0, x1, y1 = (float(v) for v in subject)
    side = max(np.sqrt((x1 - x0) * (y1 - y0) / fill), x1 - x0, y1 - y0)
    side = min(side, width, height)
    cx = float(np.clip((x0 + x1) / 2, side / 2, width - side / 2))
    cy = float(np.clip((y0 + y1) / 2, side / 2, height - side / 2))
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def oracle_centred(entries: Sequence[Mapping], fill: float, size: tuple[int, int]) -> list[np.ndarray]:
    """``oracle_centred``'s top crop per entry, for a ``size`` = (width, height) picture."""
    return [centred_square(e["subject_box"], fill, *size) for e in entries]


def best_centred_fill(entries: Sequence[Mapping], size: tuple[int, int]) -> tuple[float, dict]:
    """The fill of :data:`CENTRED_FILLS` with the best IoU-Mean on ``entries`` (validation), and
    the IoU-Mean of each fill tried."""
    scores = {
        f: float(iou_mean_each(oracle_centred(entries, f, size), entries).mean()) for f in CENTRED_FILLS
    }
    best = max(scores, key=lambda f: (scores[f], -f))
    return best, {str(f): round(s, 4) for f, s in scores.items()}


def oracle_training_free(entries: Sequence[Mapping], size: tuple[int, int]) -> list[np.ndarray]:
    """Training-free mode's top-ranked candidate given the true subject and other boxes."""
    from clipcrop.modeling.composition import rank_candidates

    w, h = size
    scale = np.array([w, h, w, h], dtype=np.float64)
    out = []
    for e in entries:
        subject = np.asarray(e["subject_box"], dtype=np.float64) / scale
        others = np.asarray(e["other_boxes"], dtype=np.float64).reshape(-1, 4) / scale
        cands = rank_candidates(subject, others, w, h, None)
        out.append(cands.boxes[int(np.argmax(cands.scores))] * scale)
    return out


def oracle_query_blind(entries: Sequence[Mapping], size: tuple[int, int]) -> list[np.ndarray]:
    """Per scene, the single crop that maximises the summed IoU-Mean of the scene's queries,
    among grid candidates and every target crop of the scene; each query gets its scene's crop."""
    from clipcrop.synthetic.shapes import grid_candidates

    grid = grid_candidates(*size)
    scenes: dict[int, list[int]] = {}
    for i, e in enumerate(entries):
        scenes.setdefault(int(e["scene"]), []).append(i)
    out: list[np.ndarray] = [np.zeros(4)] * len(entries)
    for members in scenes.values():
        targets = [np.asarray(entries[i]["boxes"], dtype=np.float64) for i in members]
        cands = np.concatenate([grid, *targets])
        total = sum(iou_np(cands, t).mean(axis=1) for t in targets)
        best = cands[int(np.argmax(total))]
        for i in members:
            out[i] = best
    return out
