"""What a crop request asks for, checked once and shared by every surface (torch-free).

:class:`CropOptions` holds everything beyond the condition: how many crops, one or several aspect
ratios, an exact output size, and priors (regions to keep whole or leave out, text to avoid,
faces). The library builds it from keyword arguments, the CLI from flags, the service from form
fields and the batch job from manifest lines, always through :meth:`CropOptions.build`, so the
same request is checked the same way everywhere, before any model work (and, on the CLI,
before torch is imported).

Boxes are **pixels xyxy of the upright image**.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import ParameterError, QueryError
from .limits import DEFAULT_LIMITS
from .ops.aspect import parse_aspect
from .validation import validate_query

PRIOR_KINDS = ("keep", "avoid", "face")
#: the largest output side ``size`` accepts (a 16k picture is already far past any display)
MAX_OUTPUT_SIDE = 16384
#: most keep/avoid boxes and avoid texts one request may carry (each text costs a text-encoder pass)
MAX_PRIORS = 32
MAX_AVOID_TEXTS = 8


@dataclass(frozen=True)
class Prior:
    """A region for crops to keep whole (``keep``, ``face``) or to leave out (``avoid``).

    Attributes:
        box: (x0, y0, x1, y1) float pixels of the upright image.
        kind: ``"keep"``, ``"avoid"`` or ``"face"`` (a detected face, kept whole).
        weight: how much a crop loses for breaking it (> 0; 1 outweighs any score).
        source: where it came from: ``"user"``, ``"faces"`` or ``"text: <query>"``.
    """

    box: tuple[float, float, float, float]
    kind: str
    weight: float = 1.0
    source: str = "user"

    def __post_init__(self) -> None:
        if self.kind not in PRIOR_KINDS:
            raise ParameterError(f"prior kind {self.kind!r} is not one of {', '.join(PRIOR_KINDS)}")
        x0, y0, x1, y1 = (float(v) for v in self.box)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
            raise ParameterError(f"prior box {list(self.box)} must be x0,y0,x1,y1 with x1 > x0 and y1 > y0")
        if not (math.isfinite(self.weight) and self.weight > 0):
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
    return Prior((values[0], values[1], values[2], values[3]), kind, weight)


def parse_size(size: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``"1080x1350"`` or ``(1080, 1350)`` -> (width, height) in pixels; None stays None.

    Raises:
        ParameterError: not two whole numbers from 1 to :data:`MAX_OUTPUT_SIDE`.
    """
    if size is None or (isinstance(size, str) and not size.strip()):
        return None
    if isinstance(size, str):
        parts = size.lower().replace("×", "x").split("x")
    else:
        parts = list(size)
    try:
        w, h = (int(str(p).strip()) for p in parts)
    except ValueError:
        raise ParameterError(f"size {size!r} must be WIDTHxHEIGHT in pixels, for example 1080x1350") from None
    if not (1 <= w <= MAX_OUTPUT_SIDE and 1 <= h <= MAX_OUTPUT_SIDE):
        raise ParameterError(f"size {size!r}: each side must be 1 to {MAX_OUTPUT_SIDE} pixels")
    return w, h


def parse_aspects(aspect: object) -> tuple[tuple[str | None, float | None], ...]:
    """One or several ratios -> ((label, width / height), ...) in the order given.

    ``None`` is one free ratio; ``"1:1,4:5"`` or ``["1:1", "4:5"]`` several; a float or a
    ``(w, h)`` pair one. Labels are ``"W:H"`` as given (``None`` for free). Duplicates refused.
    """
    if aspect is None:
        return ((None, None),)
    if isinstance(aspect, str):
        items: list = [a for a in (p.strip() for p in aspect.split(",")) if a] or [None]
    elif isinstance(aspect, list) or (isinstance(aspect, tuple) and any(isinstance(a, str) for a in aspect)):
        items = list(aspect) or [None]
    else:
        items = [aspect]
    out = []
    for item in items:
        ratio = parse_aspect(item)
        label = _label(item, ratio)
        if any(label == seen for seen, _ in out):
            raise ParameterError(f"aspect ratio {label} is given twice")
        out.append((label, ratio))
    return tuple(out)


def _label(item: object, ratio: float | None) -> str | None:
    if ratio is None:
        return None
    if isinstance(item, str) and ":" in item:
        return item.strip()
    if isinstance(item, tuple | list):
        return f"{item[0]:g}:{item[1]:g}"
    return f"{ratio:g}:1"


def _avoid_text(text: object) -> str:
    """An avoid text under the query's rules, its error naming it as what it is."""
    if not str(text).strip():
        raise ParameterError("an avoid text must not be empty")
    try:
        checked = validate_query(str(text), DEFAULT_LIMITS)
    except QueryError as exc:
        raise ParameterError(f"avoid text: {exc}") from None
    return checked or ""


@dataclass(frozen=True)
class CropOptions:
    """A crop request's options (see the module docstring); build with :meth:`build`.

    Attributes:
        top_k: crops per ratio.
        aspects: ((label, ratio), ...): one group of crops per entry, in this order.
        size: exact output (width, height) of written pictures, or None.
        upscale: let ``size`` enlarge a crop smaller than it (default: never upscale).
        priors: user keep/avoid boxes.
        avoid_text: texts whose OWL-ViT detections crops should leave out.
        faces: keep detected faces whole.
    """

    top_k: int = 5
    aspects: tuple[tuple[str | None, float | None], ...] = ((None, None),)
    size: tuple[int, int] | None = None
    upscale: bool = False
    priors: tuple[Prior, ...] = ()
    avoid_text: tuple[str, ...] = ()
    faces: bool = False

    @classmethod
    def build(
        cls,
        *,
        top_k: int = 5,
        aspect_ratio: object = None,
        size: str | Sequence[int] | None = None,
        upscale: bool = False,
        keep: Iterable[str | Prior] = (),
        avoid_box: Iterable[str | Prior] = (),
        avoid: Iterable[str] | str | None = (),
        faces: bool = False,
    ) -> CropOptions:
        """Check and convert what a caller gave (strings as the CLI and forms give them, or values).

        The aspect follows from ``size`` unless given; given both, they must agree (within 1 %).

        Raises:
            ParameterError: a bad ratio, size, box or weight; ``size`` with several ratios or with
                a ratio it contradicts; an empty avoid text.
        """
        wh = parse_size(size)
        aspects = parse_aspects(aspect_ratio)
        if wh is not None:
            if len(aspects) > 1:
                raise ParameterError("size gives one output shape; it cannot go with several aspect ratios")
            label, ratio = aspects[0]
            if ratio is None:
                aspects = ((f"{wh[0]}:{wh[1]}", wh[0] / wh[1]),)
            elif abs(ratio / (wh[0] / wh[1]) - 1) > 0.01:
                raise ParameterError(f"size {wh[0]}x{wh[1]} does not have the aspect ratio {label}")
        priors = tuple(p if isinstance(p, Prior) else parse_box(p, "keep") for p in keep)
        priors += tuple(p if isinstance(p, Prior) else parse_box(p, "avoid") for p in avoid_box)
        if len(priors) > MAX_PRIORS:
            raise ParameterError(f"at most {MAX_PRIORS} keep and avoid boxes, got {len(priors)}")
        texts = (avoid,) if isinstance(avoid, str) else tuple(avoid or ())
        if len(texts) > MAX_AVOID_TEXTS:
            raise ParameterError(f"at most {MAX_AVOID_TEXTS} avoid texts, got {len(texts)}")
        # the query's own rules: whitespace collapsed, no control characters, the length limit
        texts = tuple(_avoid_text(t) for t in texts)
        return cls(int(top_k), aspects, wh, bool(upscale), priors, texts, bool(faces))

    @property
    def several(self) -> bool:
        return len(self.aspects) > 1

    def output_size(self, box: Sequence[int]) -> tuple[int, int] | None:
        """The size a crop ``box`` is written at: ``size`` exactly, or (without ``upscale``) scaled
        down to fit inside the crop when the crop is smaller, keeping the shape; None without size."""
        if self.size is None:
            return None
        w, h = self.size
        cw, ch = box[2] - box[0], box[3] - box[1]
        scale = 1.0 if self.upscale else min(1.0, cw / w, ch / h)
        return max(1, round(w * scale)), max(1, round(h * scale))
