"""Detection manifests: the data of ``clipcrop finetune-backbone`` (OWL-ViT fine-tuning).

A JSON-lines manifest, one image per line::

    {"image": "imgs/1.jpg", "objects": [{"box": [x0, y0, x1, y1], "text": "a red circle"}, ...]}

paths relative to the manifest's folder, boxes in pixels of the upright image (x1/y1 exclusive;
the same box checks as the crop manifests of :mod:`clipcrop.data.datasets`). Texts name the same
class when they are equal after lower-casing and dropping a leading article (:func:`class_key`:
"a red circle" = "the red circle" = "red circle").

An object may also list ``"other_texts"``: broader names or synonyms that name it too
(``{"box": ..., "text": "a red circle", "other_texts": ["a red shape", "a circle"]}``). Fine-tuning
then treats the object as a positive for those queries as well, never as their negative. Why:
without them, a query for a broader name ("a circle") that a batch draws as a negative would
push the object's token away from a text that does describe it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .datasets import _entry_boxes, image_size

_ARTICLES = re.compile(r"^(a|an|the)\s+")


@dataclass(frozen=True)
class DetectionSample:
    """One manifest line.

    Attributes:
        image_path: the image.
        boxes_xyxy_px: (K, 4) float64 object boxes, ``x0, y0, x1, y1`` upright pixels; K >= 0.
        texts: K object texts, row-aligned with the boxes.
        width, height: upright image size in pixels.
        other_texts: K tuples, row-aligned: each object's other names (``"other_texts"``; empty
            when the manifest gives none).
    """

    image_path: Path
    boxes_xyxy_px: np.ndarray
    texts: tuple[str, ...]
    width: int
    height: int
    other_texts: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if not self.other_texts:
            object.__setattr__(self, "other_texts", tuple(() for _ in self.texts))

    @property
    def boxes_xyxy_norm(self) -> np.ndarray:
        """(K, 4) float64 object boxes, xyxy as fractions of the image's width and height."""
        return self.boxes_xyxy_px / np.array(
            [self.width, self.height, self.width, self.height], dtype=np.float64
        )


def class_key(text: str) -> str:
    """The class a text names: lower-cased, whitespace collapsed, leading article dropped."""
    return _ARTICLES.sub("", " ".join(text.lower().split()))


def load_detection_manifest(path: str | os.PathLike) -> list[DetectionSample]:
    """Read a detection manifest (format: the module docstring).

    Raises:
        DatasetError: missing file, bad JSON, missing image, bad box or text (message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"detection manifest {path} not found (expected JSON lines of image/objects)")
    samples: list[DetectionSample] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not valid JSON ({exc})") from None
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("image"), str)
            or not entry["image"].strip()
        ):
            raise DatasetError(f'{where}: expected {{"image": path, "objects": [...]}}')
        objects = entry.get("objects")
        if not isinstance(objects, list):
            raise DatasetError(
                f"{where}: 'objects' must be a list of {{'box': [x0, y0, x1, y1], 'text': ...}}"
            )
        image_path = (path.parent / entry["image"]).resolve()
        if not image_path.is_file():
            raise DatasetError(f"{where}: image {image_path} not found")
        try:
            width, height = image_size(image_path)
        except DatasetError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        texts = []
        for j, obj in enumerate(objects):
            text = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise DatasetError(f"{where}: object {j} needs a non-empty 'text'")
            texts.append(" ".join(text.split()))
        others = tuple(_other_texts(obj, j, where) for j, obj in enumerate(objects))
        # the same box checks as the crop manifests ("box j" is object j)
        boxes = _entry_boxes([o.get("box") for o in objects], where, width, height) if objects else []
        samples.append(
            DetectionSample(
                image_path,
                np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                tuple(texts),
                width,
                height,
                others,
            )
        )
    if not samples:
        raise DatasetError(f"{path}: no images")
    return samples


def _other_texts(obj: dict, j: int, where: str) -> tuple[str, ...]:
    """Object ``j``'s ``"other_texts"`` (absent: none), whitespace collapsed, its own text's class
    and repeats dropped. Raises DatasetError unless it is a list of non-empty strings."""
    other = obj.get("other_texts", [])
    if not isinstance(other, list) or not all(isinstance(t, str) and t.strip() for t in other):
        raise DatasetError(f"{where}: object {j}'s 'other_texts' must be a list of non-empty texts")
    seen = {class_key(obj["text"])}
    kept = []
    for t in other:
        t = " ".join(t.split())
        if class_key(t) not in seen:
            seen.add(class_key(t))
            kept.append(t)
    return tuple(kept)


__all__ = ["DetectionSample", "class_key", "load_detection_manifest"]
