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

Held-out compositions
---------------------
:data:`HELD_OUT_PAIRS` are five colour-shape pairs (each colour and each shape at most once)
that training scenes never contain (``make_scene(..., held_out=False)``): every colour and every
shape is seen in training, those pairs are not. Validation and test scenes draw from all 30.

Framing
-------
Triangles point left or right (:attr:`ShapeObject.facing`). How a subject is framed, for the
GAIC-format annotations (:func:`gaic_annotation`) and the human-like test boxes
(:func:`target_crops`), is :mod:`clipcrop.synthetic.framing_rule`: a rule of its own, learnable
from the annotations, independent of training-free mode's composition ranking.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from ..ops.box_ops import iou_np
from .framing_rule import Subject, framing_quality, human_crops

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

#: colour-shape pairs never in a training scene, caption or detection label
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "star"),
    ("green", "ring"),
    ("blue", "triangle"),
    ("yellow", "circle"),
    ("purple", "square"),
)
#: kinds that point a way, and the ways they point
POINTING_KINDS = ("triangle",)
FACINGS = ("left", "right")


# ----------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class ShapeObject:
    """One object: ``colour`` in :data:`COLOURS`, ``shape`` in :data:`SHAPES`, ``box`` xyxy pixels,
    ``facing`` the way it points (``"left"``/``"right"`` for :data:`POINTING_KINDS`, else ``""``)."""

    colour: str
    shape: str
    box: tuple[float, float, float, float]
    facing: str = ""

    @property
    def held_out(self) -> bool:
        """True for a :data:`HELD_OUT_PAIRS` pair (never seen in training)."""
        return (self.colour, self.shape) in HELD_OUT_PAIRS

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

    def subject(self, indices: Sequence[int]) -> Subject:
        """The framing rule's view of the objects ``indices``: union box, kinds and facings."""
        objs = [self.objects[i] for i in indices]
        box = tuple(float(v) for v in self.subject_box(indices))
        return Subject(box=box, kinds=tuple(o.shape for o in objs), facings=tuple(o.facing for o in objs))  # type: ignore[arg-type]

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


def _shape_points(
    shape: str, cx: float, cy: float, side: float, facing: str = ""
) -> list[tuple[float, float]] | None:
    """Polygon vertices of polygonal shapes (None for circle, square, ring); a triangle's point
    is on the side it faces."""
    r = side / 2
    if shape == "triangle":
        tip = 1.0 if facing == "right" else -1.0
        return [(cx + tip * r, cy), (cx - tip * r, cy - r), (cx - tip * r, cy + r)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            ang = -np.pi / 2 + k * np.pi / 5
            pts.append((cx + rad * np.cos(ang), cy + rad * np.sin(ang)))
        return pts
    return None


def _object_box(
    shape: str, cx: float, cy: float, side: float, facing: str = ""
) -> tuple[float, float, float, float]:
    pts = _shape_points(shape, cx, cy, side, facing)
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
        pts = [(x * s, y * s) for x, y in _shape_points(obj.shape, cx, cy, side, obj.facing) or []]
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
    held_out: bool = True,
) -> Scene:
    """Scene ``index`` of the world ``seed``: deterministic in both (and in ``held_out``).

    Args:
        index: scene number.
        seed: world seed (different seeds give unrelated scenes).
        size: side of the square image in pixels.
        min_objects, max_objects: object count, drawn uniformly (at least 2 are always placed).
        held_out: False for training scenes: no object is a :data:`HELD_OUT_PAIRS` pair.
    """
    rng = np.random.default_rng([seed, index, 7])
    image = _background(rng, size)
    count = int(rng.integers(min_objects, max_objects + 1))
    pairs = [(c, s) for c in COLOURS for s in SHAPES if held_out or (c, s) not in HELD_OUT_PAIRS]
    chosen = rng.permutation(len(pairs))[:count]
    objects: list[ShapeObject] = []
    geometry: list[tuple[float, float, float]] = []
    for k in chosen:
        colour, shape = pairs[int(k)]
        facing = FACINGS[int(rng.integers(len(FACINGS)))] if shape in POINTING_KINDS else ""
        for _ in range(60):
            side = float(rng.uniform(MIN_OBJECT_FRAC, MAX_OBJECT_FRAC) * size)
            margin = side / 2 + 3
            cx = float(rng.uniform(margin, size - margin))
            cy = float(rng.uniform(margin, size - margin))
            box = _object_box(shape, cx, cy, side, facing)
            if all(_overlap(box, o.box) <= MAX_OVERLAP for o in objects):
                objects.append(ShapeObject(colour, shape, tuple(round(v, 2) for v in box), facing))
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


# ----------------------------------------------------------------------------- framing and annotations


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
    """GAIC-style annotated crops of ``scene`` for the subject ``indices``, scored by the framing
    rule (:func:`clipcrop.synthetic.framing_rule.framing_quality`).

    The subject's human-like frames (:func:`target_crops`) and grid candidates
    (:func:`grid_candidates`): the ``n_best`` best of them all, plus ``n_rest`` drawn from the
    others (spread over the quality range: stratified by rank), each with its MOS (1..5, 2 decimals).

    Returns:
        (K, 4) float64 xyxy pixel crops and (K,) float64 MOS.
    """
    subject = scene.subject(indices)
    cands = np.concatenate([target_crops(scene, indices), grid_candidates(scene.width, scene.height)])
    q = framing_quality(cands, subject, scene.width, scene.height)
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


def target_crops(scene: Scene, indices: Sequence[int], max_crops: int = 3) -> np.ndarray:
    """The "human" crops of a query about objects ``indices``: the framing rule's ideal frame
    first, then its looser and tighter siblings (:func:`clipcrop.synthetic.framing_rule.human_crops`).

    Returns (K, 4) float64 xyxy pixels, 1 <= K <= ``max_crops``.
    """
    return human_crops(scene.subject(indices), scene.width, scene.height)[:max_crops]


def crop_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (4,) xyxy boxes."""
    return float(iou_np(a, b)[0, 0])


def distinct_pair(
    scene: Scene, rng: np.random.Generator, max_iou: float = 0.3, prefer_held_out: bool = False
) -> tuple[int, int] | None:
    """Two objects whose ideal frames overlap little (IoU <= ``max_iou``), chosen at random among
    such pairs; None when the scene has none (objects too close to tell crops apart).

    ``prefer_held_out``: choose among the pairs with a :data:`HELD_OUT_PAIRS` object when there
    are any (test queries about unseen compositions).
    """
    n = len(scene.objects)
    best = [target_crops(scene, [i], max_crops=1)[0] for i in range(n)]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if crop_iou(best[i], best[j]) <= max_iou]
    if prefer_held_out:
        unseen = [p for p in pairs if any(scene.objects[k].held_out for k in p)]
        pairs = unseen or pairs
    if not pairs:
        return None
    i, j = pairs[int(rng.integers(len(pairs)))]
    return (i, j) if rng.random() < 0.5 else (j, i)


__all__ = [
    "COLOURS",
    "FACINGS",
    "HELD_OUT_PAIRS",
    "POINTING_KINDS",
    "SHAPES",
    "SCENE_SIZE",
    "Scene",
    "ShapeObject",
    "backgrounds_available",
    "crop_iou",
    "describe",
    "distinct_pair",
    "gaic_annotation",
    "grid_candidates",
    "make_scene",
    "quality_to_mos",
    "target_crops",
]
