"""Synthetic "shapes" scenes: a world small enough to learn conditioned cropping on two CPU cores.

No pretrained weights reach our machines, so nothing else shows that text conditioning works.
Here every scene is a textured background (a blurred, desaturated crop of a real photo shipped
with scikit-image or matplotlib) with 2-5 coloured shapes from :data:`SHAPES` x :data:`COLOURS`
at random sizes and positions, some overlapping. Within a scene every colour-shape pair is
unique, so "the blue star" names exactly one object.

Everything is a pure function of ``(seed, index)`` (and of which background photos are
installed: scikit-image and matplotlib, the ``test`` extra; without them the backgrounds are
procedural blurred noise, documented so results are not compared across the two).

Boxes are ``x0, y0, x1, y1`` float pixels of the scene image, x1/y1 exclusive.

The crop rule
-------------
:func:`crop_quality` scores a crop for a *subject* (the union box of the referred object(s)),
given the boxes of the scene's other objects, in [0, 1]::

    q = containment**4 * (0.35 * fill + 0.35 * balance + 0.30 * margin) - 0.30 * sum(cut_k)

=================  ==========================================================================
``containment``    fraction of the subject's area inside the crop (to the 4th power: cutting
                   the subject is the worst mistake)
``fill``           subject area / crop area: 1 between 0.20 and 0.45, falling linearly to 0 at
                   0.04 (subject tiny) and at 0.90 (no room around it)
``balance``        mean over the two axes of min(margin) / max(margin) of the opposite margins
``margin``         mean over the four sides of min(1, margin / (0.15 * subject side))
``cut_k``          for each other object: 1 when 10%-90% of its area is inside the crop, falling
                   linearly to 0 at 0% and 100% (cutting through an object lowers the score)
=================  ==========================================================================

clipped to [0, 1]. GAIC-style annotations give crops MOS ``1 + 4 q`` (GAIC's 1..5 scale):
:func:`grid_candidates` on a 12 x 12 grid, the best ones and a spread of the rest. The
"human" crops of a query (:func:`target_crops`) are the rule's best crops under different
margins and aspect ratios: for each aspect ratio in (1:1, 4:3, 3:4) and subject fill in
(0.25, 0.4), the crop of that shape centred on the subject, moved by up to 15% of its size
where that scores better while keeping the whole subject; the best four distinct ones (shapes
that cannot hold the whole subject inside the image are left out when others can).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from ..modeling.composition import smaller_over_larger
from ..ops.box_ops import intersection_np, iou_np

logger = logging.getLogger(__name__)

#: colour name -> RGB fill
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (222, 38, 38),
    "green": (36, 168, 58),
    "blue": (36, 86, 228),
    "yellow": (246, 214, 36),
    "purple": (146, 56, 196),
    "white": (246, 246, 246),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring")
SCENE_SIZE = 384
#: object side as a fraction of the scene side
MIN_OBJECT_FRAC = 0.15
MAX_OBJECT_FRAC = 0.33
#: two objects may overlap by at most this fraction of the smaller one's box
MAX_OVERLAP = 0.25
#: photos (scikit-image data folder, plus matplotlib's grace_hopper.jpg) used as backgrounds
BACKGROUND_PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "grass.png",
    "gravel.png",
    "brick.png",
    "camera.png",
    "moon.png",
    "grace_hopper.jpg",
)

# the crop rule (see the module docstring)
RULE_WEIGHTS = {"fill": 0.35, "balance": 0.35, "margin": 0.30}
CUT_PENALTY = 0.30
FILL_POINTS = ((0.04, 0.0), (0.20, 1.0), (0.45, 1.0), (0.90, 0.0))
MARGIN_FRAC = 0.15
TARGET_ASPECTS = (1.0, 4 / 3, 3 / 4)
TARGET_FILLS = (0.25, 0.40)


# ----------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class ShapeObject:
    """One object: ``colour`` in :data:`COLOURS`, ``shape`` in :data:`SHAPES`, ``box`` xyxy pixels."""

    colour: str
    shape: str
    box: tuple[float, float, float, float]

    @property
    def name(self) -> str:
        """``"red circle"``"""
        return f"{self.colour} {self.shape}"

    def text(self, article: str = "a") -> str:
        """``"a red circle"`` (``article=""`` gives the bare name)."""
        return f"{article} {self.name}".strip()


@dataclass
class Scene:
    """A generated scene: the RGB image and its objects (drawing order: later ones on top)."""

    seed: int
    index: int
    image: Image.Image
    objects: list[ShapeObject]

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    def boxes(self) -> np.ndarray:
        """(K, 4) float64 object boxes, xyxy pixels."""
        return np.asarray([o.box for o in self.objects], dtype=np.float64).reshape(-1, 4)

    def find(self, name: str) -> int | None:
        """Index of the object called ``name`` ("red circle"), or None."""
        for i, o in enumerate(self.objects):
            if o.name == name:
                return i
        return None

    def subject_box(self, indices: Sequence[int]) -> np.ndarray:
        """(4,) union box of the objects ``indices``."""
        b = self.boxes()[list(indices)]
        return np.concatenate([b[:, :2].min(axis=0), b[:, 2:].max(axis=0)])

    def others(self, indices: Sequence[int]) -> np.ndarray:
        """(K, 4) boxes of every object not in ``indices``."""
        keep = [i for i in range(len(self.objects)) if i not in set(indices)]
        return self.boxes()[keep]


def describe(scene: Scene, indices: Sequence[int], article: str = "the") -> str:
    """The referring text of one or two objects: ``"the blue star"``, ``"a red circle and a yellow square"``."""
    return " and ".join(scene.objects[i].text(article) for i in indices)


@functools.lru_cache(maxsize=1)
def _photo_paths() -> tuple[Path, ...]:
    paths: list[Path] = []
    try:
        import skimage

        data = Path(skimage.__file__).parent / "data"
        paths += [data / n for n in BACKGROUND_PHOTOS if (data / n).is_file()]
    except ImportError:
        pass
    try:
        import matplotlib

        hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if hopper.is_file():
            paths.append(hopper)
    except ImportError:
        pass
    return tuple(paths)


@functools.lru_cache(maxsize=16)
def _photo(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img = img.convert("RGB")
        img.load()
    return img


def backgrounds_available() -> bool:
    """True when real photos (scikit-image / matplotlib sample data) back the scenes."""
    return bool(_photo_paths())


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A textured, blurred, desaturated background: a random crop of a real photo (or noise)."""
    paths = _photo_paths()
    if paths:
        photo = _photo(paths[int(rng.integers(len(paths)))])
        side = int(min(photo.size) * rng.uniform(0.4, 1.0))
        x0 = int(rng.integers(0, photo.width - side + 1))
        y0 = int(rng.integers(0, photo.height - side + 1))
        img = photo.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BILINEAR)
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
    else:  # procedural fallback: coloured noise at two scales
        low = rng.uniform(40, 215, size=(6, 6, 3)).astype(np.uint8)
        high = rng.uniform(-25, 25, size=(48, 48, 3))
        img = Image.fromarray(low).resize((size, size), Image.BICUBIC)
        arr = (
            np.asarray(img, dtype=np.float64)
            + np.asarray(
                Image.fromarray(((high + 25) * 5).astype(np.uint8)).resize((size, size), Image.BICUBIC),
                dtype=np.float64,
            )
            / 5
            - 25
        )
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(2.0, 5.0))))
    # less saturated and contrasted than the objects, so shapes stand out but backgrounds are not flat
    arr = np.asarray(img, dtype=np.float64)
    grey = arr.mean(axis=2, keepdims=True)
    arr = grey + 0.45 * (arr - grey)
    arr = arr.mean() + 0.7 * (arr - arr.mean())
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _shape_points(shape: str, cx: float, cy: float, side: float) -> list[tuple[float, float]] | None:
    """Polygon vertices of polygonal shapes (None for circle, square, ring)."""
    r = side / 2
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            ang = -np.pi / 2 + k * np.pi / 5
            pts.append((cx + rad * np.cos(ang), cy + rad * np.sin(ang)))
        return pts
    return None


def _object_box(shape: str, cx: float, cy: float, side: float) -> tuple[float, float, float, float]:
    pts = _shape_points(shape, cx, cy, side)
    if pts is None:
        return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs), min(ys), max(xs), max(ys))


def _draw(
    draw: ImageDraw.ImageDraw, obj: ShapeObject, cx: float, cy: float, side: float, fill, scale: int
) -> None:
    s = scale
    outline = tuple(int(c * 0.55) for c in fill)
    line = max(1, round(1.5 * s))
    r = side / 2
    bbox = [(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s]
    if obj.shape == "circle":
        draw.ellipse(bbox, fill=fill, outline=outline, width=line)
    elif obj.shape == "square":
        draw.rectangle(bbox, fill=fill, outline=outline, width=line)
    elif obj.shape == "ring":
        width = max(2, round(0.24 * side * s))
        draw.ellipse(bbox, outline=outline, width=width)
        inset = line
        draw.ellipse(
            [bbox[0] + inset, bbox[1] + inset, bbox[2] - inset, bbox[3] - inset],
            outline=fill,
            width=max(1, width - 2 * inset),
        )
    else:
        pts = [(x * s, y * s) for x, y in _shape_points(obj.shape, cx, cy, side) or []]
        draw.polygon(pts, fill=fill, outline=outline, width=line)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(smaller, 1e-9)


def make_scene(
    index: int,
    seed: int = 0,
    *,
    size: int = SCENE_SIZE,
    min_objects: int = 2,
    max_objects: int = 5,
) -> Scene:
    """Scene ``index`` of the world ``seed``: deterministic in both.

    Args:
        index: scene number.
        seed: world seed (different seeds give unrelated scenes).
        size: side of the square image in pixels.
        min_objects, max_objects: object count, drawn uniformly (at least 2 are always placed).
    """
    rng = np.random.default_rng([seed, index, 7])
    image = _background(rng, size)
    count = int(rng.integers(min_objects, max_objects + 1))
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    chosen = rng.permutation(len(pairs))[:count]
    objects: list[ShapeObject] = []
    geometry: list[tuple[float, float, float]] = []
    for k in chosen:
        colour, shape = pairs[int(k)]
        for _ in range(60):
            side = float(rng.uniform(MIN_OBJECT_FRAC, MAX_OBJECT_FRAC) * size)
            margin = side / 2 + 3
            cx = float(rng.uniform(margin, size - margin))
            cy = float(rng.uniform(margin, size - margin))
            box = _object_box(shape, cx, cy, side)
            if all(_overlap(box, o.box) <= MAX_OVERLAP for o in objects):
                objects.append(ShapeObject(colour, shape, tuple(round(v, 2) for v in box)))
                geometry.append((cx, cy, side))
                break
    scale = 2  # draw at twice the size and downsample: anti-aliased edges
    canvas = image.resize((size * scale, size * scale), Image.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    for obj, (cx, cy, side) in zip(objects, geometry, strict=True):
        jitter = rng.integers(-14, 15, size=3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[obj.colour], jitter, strict=True))
        _draw(draw, obj, cx, cy, side, fill, scale)
    image = canvas.resize((size, size), Image.LANCZOS)
    return Scene(seed=seed, index=index, image=image, objects=objects)


# ----------------------------------------------------------------------------- the crop rule


def crop_quality_terms(crops: np.ndarray, subject: np.ndarray, others: np.ndarray) -> dict[str, np.ndarray]:
    """Each term of :func:`crop_quality` as a (C,) array (see the module docstring).

    Args:
        crops: (C, 4) xyxy crops; subject: (4,) the subject's box; others: (K, 4) the other
            objects' boxes (K may be 0). Any unit, the same for all three.
    """
    crops = np.asarray(crops, dtype=np.float64).reshape(-1, 4)
    subject = np.asarray(subject, dtype=np.float64).reshape(4)
    others = np.asarray(others, dtype=np.float64).reshape(-1, 4)
    sw, sh = max(subject[2] - subject[0], 1e-9), max(subject[3] - subject[1], 1e-9)
    s_area = sw * sh
    c_area = np.maximum((crops[:, 2] - crops[:, 0]) * (crops[:, 3] - crops[:, 1]), 1e-9)
    containment = intersection_np(crops, subject[None])[:, 0] / s_area
    fill = s_area / c_area
    xs, ys = zip(*FILL_POINTS, strict=True)
    fill_term = np.interp(fill, xs, ys)
    left = np.clip(subject[0] - crops[:, 0], 0.0, None)
    right = np.clip(crops[:, 2] - subject[2], 0.0, None)
    top = np.clip(subject[1] - crops[:, 1], 0.0, None)
    bottom = np.clip(crops[:, 3] - subject[3], 0.0, None)
    balance = 0.5 * (smaller_over_larger(left, right) + smaller_over_larger(top, bottom))
    margin = np.mean(
        [
            np.minimum(1.0, left / (MARGIN_FRAC * sw)),
            np.minimum(1.0, right / (MARGIN_FRAC * sw)),
            np.minimum(1.0, top / (MARGIN_FRAC * sh)),
            np.minimum(1.0, bottom / (MARGIN_FRAC * sh)),
        ],
        axis=0,
    )
    if len(others):
        o_area = np.maximum((others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]), 1e-9)
        frac = intersection_np(crops, others) / o_area[None]
        cut = np.clip(np.minimum(frac, 1.0 - frac) / 0.1, 0.0, 1.0).sum(axis=1)
    else:
        cut = np.zeros(len(crops))
    return {"containment": containment, "fill": fill_term, "balance": balance, "margin": margin, "cut": cut}


def crop_quality(crops: np.ndarray, subject: np.ndarray, others: np.ndarray) -> np.ndarray:
    """The composition rule: (C, 4) xyxy crops -> (C,) quality in [0, 1] (module docstring)."""
    return _quality(crop_quality_terms(crops, subject, others))


def _quality(t: dict[str, np.ndarray]) -> np.ndarray:
    """:func:`crop_quality` from the terms :func:`crop_quality_terms` returned."""
    body = sum(RULE_WEIGHTS[k] * t[k] for k in RULE_WEIGHTS)
    return np.clip(t["containment"] ** 4 * body - CUT_PENALTY * t["cut"], 0.0, 1.0)


def quality_to_mos(quality: np.ndarray) -> np.ndarray:
    """Rule quality in [0, 1] -> GAIC MOS in [1, 5]."""
    return 1.0 + 4.0 * np.asarray(quality, dtype=np.float64)


def grid_candidates(
    width: int, height: int, grid: int = 12, min_frac: float = 0.25, max_aspect: float = 2.0
) -> np.ndarray:
    """GAIC-like candidate crops: every box with corners on a ``grid`` x ``grid`` lattice, at least
    ``min_frac`` of the image side on each axis and an aspect ratio within ``1/max_aspect..max_aspect``.

    Returns (C, 4) float64 xyxy pixels.
    """
    xs = np.linspace(0.0, width, grid + 1)
    ys = np.linspace(0.0, height, grid + 1)
    x0, x1 = np.meshgrid(xs, xs, indexing="ij")
    y0, y1 = np.meshgrid(ys, ys, indexing="ij")
    xpairs = np.stack([x0.ravel(), x1.ravel()], 1)
    ypairs = np.stack([y0.ravel(), y1.ravel()], 1)
    xpairs = xpairs[xpairs[:, 1] - xpairs[:, 0] >= min_frac * width - 1e-6]
    ypairs = ypairs[ypairs[:, 1] - ypairs[:, 0] >= min_frac * height - 1e-6]
    xi, yi = np.meshgrid(np.arange(len(xpairs)), np.arange(len(ypairs)), indexing="ij")
    boxes = np.stack(
        [xpairs[xi.ravel(), 0], ypairs[yi.ravel(), 0], xpairs[xi.ravel(), 1], ypairs[yi.ravel(), 1]], axis=1
    )
    aspect = (boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1])
    return boxes[(aspect <= max_aspect) & (aspect >= 1 / max_aspect)]


def gaic_annotation(
    scene: Scene, indices: Sequence[int], rng: np.random.Generator, n_best: int = 8, n_rest: int = 56
) -> tuple[np.ndarray, np.ndarray]:
    """GAIC-style annotated crops of ``scene`` for the subject ``indices``.

    The ``n_best`` best grid candidates under the rule plus ``n_rest`` drawn from the others
    (spread over the quality range: stratified by rank), each with its MOS (1..5, 2 decimals).

    Returns:
        (K, 4) float64 xyxy pixel crops and (K,) float64 MOS.
    """
    cands = grid_candidates(scene.width, scene.height)
    q = crop_quality(cands, scene.subject_box(indices), scene.others(indices))
    order = np.argsort(-q, kind="stable")
    best = order[:n_best]
    rest = order[n_best:]
    if len(rest) > n_rest:
        edges = np.linspace(0, len(rest), n_rest + 1).astype(int)
        rest = np.array(
            [rest[int(rng.integers(a, max(a + 1, b)))] for a, b in zip(edges[:-1], edges[1:], strict=True)]
        )
    keep = np.concatenate([best, rest])
    return cands[keep], np.round(quality_to_mos(q[keep]), 2)


def _shaped_crop(
    subject: np.ndarray, aspect: float, fill: float, width: int, height: int
) -> tuple[float, float]:
    """(crop width, crop height) of the given aspect whose area makes the subject fill ``fill`` of
    it, grown to hold the subject with 5% margins, shrunk to fit the image."""
    sw, sh = subject[2] - subject[0], subject[3] - subject[1]
    area = sw * sh / fill
    cw, ch = np.sqrt(area * aspect), np.sqrt(area / aspect)
    grow = max(1.0, 1.1 * sw / cw, 1.1 * sh / ch)
    cw, ch = cw * grow, ch * grow
    shrink = min(1.0, width / cw, height / ch)
    return float(cw * shrink), float(ch * shrink)


def target_crops(scene: Scene, indices: Sequence[int], max_crops: int = 4) -> np.ndarray:
    """The "human" crops of a query about objects ``indices``: the rule's best crop for each aspect
    ratio and subject fill (module docstring), best first, near-duplicates (IoU > 0.85) removed.

    Returns (K, 4) float64 xyxy pixels, 1 <= K <= ``max_crops``.
    """
    subject = scene.subject_box(indices)
    others = scene.others(indices)
    w, h = scene.width, scene.height
    scx, scy = (subject[0] + subject[2]) / 2, (subject[1] + subject[3]) / 2
    steps = np.linspace(-0.15, 0.15, 5)
    # centred first, so that it wins ties
    shifts = sorted(((dx, dy) for dx in steps for dy in steps), key=lambda d: (abs(d[0]) + abs(d[1]), d))
    found: list[tuple[float, bool, np.ndarray]] = []
    for aspect in TARGET_ASPECTS:
        for fill in TARGET_FILLS:
            cw, ch = _shaped_crop(subject, aspect, fill, w, h)
            boxes = []
            for dx, dy in shifts:
                x0 = float(np.clip(scx - cw / 2 + dx * cw, 0.0, w - cw))
                y0 = float(np.clip(scy - ch / 2 + dy * ch, 0.0, h - ch))
                boxes.append([x0, y0, x0 + cw, y0 + ch])
            boxes_arr = np.asarray(boxes)
            terms = crop_quality_terms(boxes_arr, subject, others)
            q = _quality(terms)
            # a person keeps the whole subject whenever the crop's shape allows it
            whole = terms["containment"] >= 1.0 - 1e-9
            if whole.any():
                q = np.where(whole, q, -1.0)
            best = int(np.argmax(q))
            found.append((float(q[best]), bool(whole[best]), boxes_arr[best]))
    if any(whole for _, whole, _ in found):  # shapes that cannot hold the subject are not offered
        found = [f for f in found if f[1]]
    found.sort(key=lambda t: -t[0])
    out: list[np.ndarray] = []
    for _, _, box in found:
        if out and iou_np(box, np.asarray(out)).max() > 0.85:
            continue
        out.append(box)
        if len(out) >= max_crops:
            break
    return np.round(np.asarray(out), 2)


def crop_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (4,) xyxy boxes."""
    return float(iou_np(a, b)[0, 0])


def distinct_pair(scene: Scene, rng: np.random.Generator, max_iou: float = 0.3) -> tuple[int, int] | None:
    """Two objects whose best target crops overlap little (IoU <= ``max_iou``), chosen at random
    among such pairs; None when the scene has none (objects too close to tell crops apart)."""
    n = len(scene.objects)
    best = [target_crops(scene, [i], max_crops=1)[0] for i in range(n)]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if crop_iou(best[i], best[j]) <= max_iou]
    if not pairs:
        return None
    i, j = pairs[int(rng.integers(len(pairs)))]
    return (i, j) if rng.random() < 0.5 else (j, i)


__all__ = [
    "COLOURS",
    "SHAPES",
    "SCENE_SIZE",
    "Scene",
    "ShapeObject",
    "backgrounds_available",
    "crop_iou",
    "crop_quality",
    "crop_quality_terms",
    "describe",
    "distinct_pair",
    "gaic_annotation",
    "grid_candidates",
    "make_scene",
    "quality_to_mos",
    "target_crops",
]
