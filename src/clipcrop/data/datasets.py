"""Readers for the training and evaluation datasets: GAIC (+ captions) and TextCrop-style manifests.

Only annotations and image *headers* are read here (sizes come from ``PIL.Image.open``, which does
not decode pixels), so listing a dataset is fast; decoding is the data loader's job.

Pixel boxes refer to the *upright* image, i.e. after applying the EXIF orientation, which is what
:func:`clipcrop.io.images.load_image` returns and what an annotator saw (GAIC's own code reads images
with OpenCV, which also applies the EXIF orientation). ``width`` / ``height`` are that upright size.

Every problem with the data raises :class:`~clipcrop.errors.DatasetError` saying which file (and
line, or manifest entry) is wrong and what was expected.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DatasetError
from ..io.images import is_image_path

logger = logging.getLogger(__name__)

#: File name suffixes treated as images when listing a GAIC split folder.


def image_files(folder: Path) -> list[Path]:
    """The images of a dataset folder (by extension, :func:`clipcrop.io.images.is_image_path`;
    hidden files skipped), sorted by name."""
    return sorted(
        (p for p in folder.iterdir() if is_image_path(p) and not p.name.startswith(".")), key=lambda p: p.name
    )


#: GAIC marks crops that could not be rated with this MOS; they are skipped.
GAIC_INVALID_MOS = -2.0
#: GAIC split folder -> caption file stem (the caption release calls the validation split "valid").
CAPTION_FILES = {"train": "train", "val": "valid", "test": "test"}
_SPLIT_ALIASES = {"valid": "val", "validation": "val"}
_SHOW = 5  # how many offending names an error message lists


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    more = f" and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
    return f"{len(names)}: {shown}{more}"


def image_size(path: Path) -> tuple[int, int]:
    """Upright ``(width, height)`` of an image file from its header (EXIF orientation applied)."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            try:
                orientation = int(img.getexif().get(0x0112, 1))
            except Exception:  # a corrupt EXIF block does not make the image unusable
                orientation = 1
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable image ({exc})") from None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return int(width), int(height)


# ----------------------------------------------------------------------------- GAIC


@dataclass(frozen=True)
class GaicSample:
    """One GAIC image with its valid annotated crops.

    Attributes:
        image_path: path of the image file.
        caption: its text annotation, or ``None`` when captions were not loaded / missing.
        boxes_xyxy_px: (K, 4) float64 crops as ``x0, y0, x1, y1`` in upright pixels (converted from
            GAIC's ``y1 x1 y2 x2`` order; invalid ``-2`` rows removed). K may be 0.
        mos: (K,) float64 mean opinion scores (1..5), row-aligned with ``boxes_xyxy_px``.
        width, height: upright image size in pixels.
    """

    image_path: Path
    caption: str | None
    boxes_xyxy_px: np.ndarray
    mos: np.ndarray
    width: int
    height: int

    @property
    def name(self) -> str:
        """The image file name (the caption files' key)."""
        return self.image_path.name

    def boxes_xyxy_norm(self) -> np.ndarray:
        """(K, 4) float64 crops in xyxy normalised to width/height, in [0, 1]."""
        return self.boxes_xyxy_px / np.array([self.width, self.height, self.width, self.height], np.float64)

    def best_crop_index(self) -> int:
        """Index of the highest-MOS crop (first one on ties); raises if there is none."""
        if len(self.mos) == 0:
            raise DatasetError(f"{self.image_path}: no valid annotated crops")
        return int(np.argmax(self.mos))


@dataclass(frozen=True)
class CropLine:
    """One rated line of a GAIC annotation file.

    Attributes:
        box_xyxy_px: the crop as ``x0, y0, x1, y1`` upright pixels, clipped to the image (GAIC's
            rounding spills over by a pixel at times).
        mos: its mean opinion score.
        outside_px: how far the crop as written reached outside the image (0 when inside).
    """

    box_xyxy_px: tuple[float, float, float, float]
    mos: float
    outside_px: float


def parse_crop_line(line: str, width: int, height: int) -> CropLine | None:
    """Parse ``"y1 x1 y2 x2 MOS"`` (spaces or commas) of a ``width`` x ``height`` image.

    Returns:
        The crop, or None for a blank line and for GAIC's unrated rows (MOS -2).

    Raises:
        ValueError: the message says what is wrong with the line (without its place).
    """
    fields = line.replace(",", " ").split()
    if not fields:
        return None
    if len(fields) != 5:
        raise ValueError(f"expected 'y1 x1 y2 x2 MOS', got {line.strip()!r}")
    try:
        y1, x1, y2, x2, score = (float(v) for v in fields)
    except ValueError:
        raise ValueError(f"non-numeric value in {line.strip()!r}") from None
    if score == GAIC_INVALID_MOS:
        return None
    if not all(math.isfinite(v) for v in (y1, x1, y2, x2, score)):
        raise ValueError(f"non-finite value in {line.strip()!r}")
    outside = max(0.0, -x1, -y1, x2 - width, y2 - height)
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(
            f"empty crop {line.strip()!r} (order is y1 x1 y2 x2 MOS) for a {width}x{height} image"
        )
    return CropLine((x1, y1, x2, y2), score, outside)


def _parse_gaic_annotation(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    boxes: list[tuple[float, float, float, float]] = []
    mos: list[float] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read annotation file ({exc})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        try:
            crop = parse_crop_line(line, width, height)
        except ValueError as exc:
            raise DatasetError(f"{path}:{lineno}: {exc}") from None
        if crop is not None:
            boxes.append(crop.box_xyxy_px)
            mos.append(crop.mos)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(mos, dtype=np.float64)


def _load_captions(text_dir: Path, split: str) -> dict[str, str]:
    path = text_dir / f"{CAPTION_FILES[split]}.json"
    if not path.is_file():
        raise DatasetError(
            f"caption file {path} not found: expected {text_dir}/{{train,valid,test}}.json "
            f"(GAIC split {split!r} uses {CAPTION_FILES[split]}.json)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object mapping image file name -> caption")
    bad = [str(k) for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise DatasetError(f"{path}: captions must be strings; not for {_few(bad)}")
    return {str(k): v.strip() for k, v in data.items()}


def load_gaic(
    root: str | os.PathLike,
    split: str,
    text_annotations_dir: str | os.PathLike | None = None,
    require_captions: bool = True,
) -> list[GaicSample]:
    """List a GAIC (GAICD) split with its valid crops and, optionally, captions.

    Layout::

        root/images/{train,val,test}/X.jpg
        root/annotations/{train,val,test}/X.txt      one crop per line: "y1 x1 y2 x2 MOS"
        text_annotations_dir/{train,valid,test}.json {"X.jpg": "caption", ...}

    Args:
        root: the GAIC folder.
        split: ``"train"``, ``"val"`` (``"valid"`` accepted) or ``"test"``.
        text_annotations_dir: folder of the caption JSON files; ``None`` loads no captions
            (every ``caption`` is ``None`` and ``require_captions`` is not checked).
        require_captions: with captions loaded, an image without a (non-empty) caption is an
            error; ``False`` keeps it with ``caption=None``.

    Returns:
        Samples sorted by file name. Rows with MOS -2 are skipped; an image whose crops are all
        invalid is kept with K = 0 (logged), as the losses handle it.

    Raises:
        DatasetError: missing folders or files, malformed lines, unreadable images, missing captions.
    """
    split = _SPLIT_ALIASES.get(split, split)
    if split not in CAPTION_FILES:
        raise DatasetError(f"unknown GAIC split {split!r}: expected one of train, val, test")
    root = Path(root)
    image_dir, ann_dir = root / "images" / split, root / "annotations" / split
    for folder, what in ((image_dir, "images"), (ann_dir, "annotations")):
        if not folder.is_dir():
            raise DatasetError(
                f"GAIC {what} folder {folder} not found: expected root/images/{split}/*.jpg and "
                f"root/annotations/{split}/*.txt under {root}"
            )

    image_paths = image_files(image_dir)
    if not image_paths:
        raise DatasetError(f"no images in {image_dir}")
    missing_ann = [p.name for p in image_paths if not (ann_dir / f"{p.stem}.txt").is_file()]
    if missing_ann:
        raise DatasetError(f"images without an annotation file in {ann_dir} ({_few(missing_ann)})")

    captions: dict[str, str] | None = None
    if text_annotations_dir is not None:
        captions = _load_captions(Path(text_annotations_dir), split)
        if require_captions:
            uncaptioned = [p.name for p in image_paths if not captions.get(p.name)]
            if uncaptioned:
                raise DatasetError(
                    f"images of split {split!r} without a caption in "
                    f"{Path(text_annotations_dir) / (CAPTION_FILES[split] + '.json')} ({_few(uncaptioned)})"
                )

    samples: list[GaicSample] = []
    for path in image_paths:
        width, height = image_size(path)
        boxes, mos = _parse_gaic_annotation(ann_dir / f"{path.stem}.txt", width, height)
        if len(mos) == 0:
            logger.warning("%s: no valid annotated crops", path)
        caption = (captions.get(path.name) or None) if captions is not None else None
        samples.append(GaicSample(path, caption, boxes, mos, width, height))
    return samples


# ----------------------------------------------------------------------------- TextCrop manifests


@dataclass(frozen=True)
class TextCropSample:
    """One query of a conditioned-cropping test set (TextCrop, Horanyi-PR, image queries).

    Attributes:
        index: position of the entry in the manifest (for error messages and result files).
        image_path: the image to crop.
        query: the text query, or ``None`` for an image-only query.
        image_query_path: the query image for image-conditioned cropping, or ``None``.
        boxes_xyxy_px: (K, 4) float64 human crops, ``x0, y0, x1, y1`` in upright pixels, K >= 1.
        width, height: upright image size in pixels.
    """

    index: int
    image_path: Path
    query: str | None
    image_query_path: Path | None
    boxes_xyxy_px: np.ndarray
    width: int
    height: int

    def boxes_xyxy_norm(self) -> np.ndarray:
        """(K, 4) float64 human crops in xyxy normalised to width/height."""
        return self.boxes_xyxy_px / np.array([self.width, self.height, self.width, self.height], np.float64)


def _entry_boxes(raw: object, where: str, width: int, height: int) -> np.ndarray:
    if not isinstance(raw, list) or not raw:
        raise DatasetError(f"{where}: 'boxes' must be a non-empty list of [x0, y0, x1, y1]")
    out = []
    for j, box in enumerate(raw):
        if (
            not isinstance(box, list | tuple)
            or len(box) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
            or not all(math.isfinite(v) for v in box)
        ):
            raise DatasetError(f"{where}: box {j} must be 4 finite numbers [x0, y0, x1, y1], got {box!r}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if x1 <= x0 or y1 <= y0:
            raise DatasetError(f"{where}: box {j} {box!r} is empty or not x0 < x1, y0 < y1")
        if x0 < -1 or y0 < -1 or x1 > width + 1 or y1 > height + 1:
            raise DatasetError(f"{where}: box {j} {box!r} lies outside the {width}x{height} image (pixels)")
        out.append((max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)))
    boxes = np.asarray(out, dtype=np.float64)
    if max(width, height) > 2 and boxes.max() <= 1.0:
        raise DatasetError(f"{where}: boxes look normalised to [0, 1]; the manifest takes pixels")
    return boxes


def load_textcrop(
    root: str | os.PathLike, annotations: str | os.PathLike | None = None
) -> list[TextCropSample]:
    """Read a conditioned-cropping manifest.

    The manifest (default ``root/annotations.json``) is a JSON list of entries::

        {"image": "imgs/1.jpg", "query": "red handbag", "boxes": [[x0, y0, x1, y1], ...]}

    with paths relative to ``root`` and boxes in upright pixels of the image. An entry may carry
    ``"image_query": "queries/1.jpg"`` (a query image for image-conditioned cropping) instead of,
    or as well as, ``"query"``; at least one of the two is required.

    Returns:
        One sample per entry, in manifest order (the order is the evaluation's).

    Raises:
        DatasetError: missing manifest or files, or an invalid entry (message names its index).
    """
    root = Path(root)
    manifest = Path(annotations) if annotations is not None else root / "annotations.json"
    if not manifest.is_file():
        raise DatasetError(
            f"manifest {manifest} not found (expected a JSON list of image/query/boxes entries)"
        )
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{manifest}: not valid JSON ({exc})") from None
    if not isinstance(entries, list):
        raise DatasetError(f"{manifest}: expected a JSON list of entries, got {type(entries).__name__}")

    samples: list[TextCropSample] = []
    for i, entry in enumerate(entries):
        where = f"{manifest}: entry {i}"
        if not isinstance(entry, dict):
            raise DatasetError(f"{where}: expected an object with 'image', 'query' and 'boxes'")
        image = entry.get("image")
        if not isinstance(image, str) or not image.strip():
            raise DatasetError(f"{where}: 'image' must be a non-empty relative path")
        query = entry.get("query")
        if query is not None and (not isinstance(query, str) or not query.strip()):
            raise DatasetError(f"{where}: 'query' must be a non-empty string")
        image_query = entry.get("image_query")
        if image_query is not None and (not isinstance(image_query, str) or not image_query.strip()):
            raise DatasetError(f"{where}: 'image_query' must be a non-empty relative path")
        if query is None and image_query is None:
            raise DatasetError(f"{where}: needs a 'query' (text) or an 'image_query' (image path)")

        image_path = root / image
        if not image_path.is_file():
            raise DatasetError(f"{where}: image {image_path} not found")
        query_path = None
        if image_query is not None:
            query_path = root / image_query
            if not query_path.is_file():
                raise DatasetError(f"{where}: query image {query_path} not found")
        try:
            width, height = image_size(image_path)
        except DatasetError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        boxes = _entry_boxes(entry.get("boxes"), where, width, height)
        samples.append(
            TextCropSample(
                index=i,
                image_path=image_path,
                query=query.strip() if query is not None else None,
                image_query_path=query_path,
                boxes_xyxy_px=boxes,
                width=width,
                height=height,
            )
        )
    return samples


__all__ = [
    "CAPTION_FILES",
    "CropLine",
    "GAIC_INVALID_MOS",
    "GaicSample",
    "TextCropSample",
    "image_size",
    "load_gaic",
    "load_textcrop",
    "parse_crop_line",
]
