"""``clipcrop check-data``: everything wrong with a GAIC copy and its captions, before a long run.

:func:`load_gaic` stops at the first problem, which is right for training but makes fixing a
dataset a loop of reruns. :func:`check_gaic` reads every split folder, annotation line, image
header and caption and returns *all* problems, each with the file (and line) it is in:

* errors (training would fail or learn from garbage): a missing split folder, an unreadable
  image, an image without an annotation file or the reverse, a malformed line (field count,
  numbers, an empty crop, a MOS outside 1..5 that is not GAIC's unrated -2), a crop reaching
  more than :data:`OUTSIDE_TOLERANCE_PX` outside its image, a missing or malformed caption file,
  an image without a caption;
* warnings (training works, but check): an image whose crops are all unrated, a caption for an
  image the split does not have, a split whose size differs from GAIC's journal version
  (:data:`GAIC_SPLIT_SIZES`).

Layout and formats: :func:`clipcrop.data.datasets.load_gaic`. Boxes are read in GAIC's order,
``y1 x1 y2 x2`` pixels of the upright image.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError
from .datasets import CAPTION_FILES, image_files, image_size, parse_crop_line

#: images per split in the journal version of GAIC (Zeng et al., TPAMI 2020)
GAIC_SPLIT_SIZES = {"train": 2636, "val": 200, "test": 500}
#: GAIC's crops spill over the image by a pixel at times (rounding); beyond this it is an error
OUTSIDE_TOLERANCE_PX = 1.0
MOS_RANGE = (1.0, 5.0)


@dataclass(frozen=True)
class Problem:
    """One thing wrong: ``level`` ``error`` or ``warning``, the file (and 1-based line) it is in."""

    level: str
    path: Path
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.level}: {self.message}"


@dataclass
class SplitSummary:
    """What one split holds: image files, annotation files, rated crops, and captions (None
    when no caption folder was given)."""

    split: str
    images: int = 0
    annotations: int = 0
    crops: int = 0
    captions: int | None = None

    def __str__(self) -> str:
        text = f"{self.split}: {self.images} images, {self.annotations} annotation files, {self.crops} rated crops"
        return text + (f", {self.captions} captions" if self.captions is not None else "")


@dataclass
class DataReport:
    """The outcome of :func:`check_gaic`: a summary per split and every problem found."""

    splits: list[SplitSummary] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]


def check_gaic(
    root: str | os.PathLike,
    text_annotations: str | os.PathLike | None = None,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> DataReport:
    """Check a GAIC folder (and a caption folder) split by split; see the module docstring.

    Raises:
        DatasetError: ``root`` is not a folder, or an unknown split is asked for.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"GAIC folder {root} not found")
    unknown = [s for s in splits if s not in CAPTION_FILES]
    if unknown:
        raise DatasetError(f"unknown GAIC split {unknown[0]!r}: expected train, val or test")
    report = DataReport()
    for split in splits:
        summary = SplitSummary(split)
        report.splits.append(summary)
        names = _check_split(root, split, summary, report.problems)
        if text_annotations is not None and names is not None:
            _check_captions(Path(text_annotations), split, names, summary, report.problems)
        expected = GAIC_SPLIT_SIZES[split]
        if names is not None and summary.images != expected:
            report.problems.append(
                Problem(
                    "warning",
                    root / "images" / split,
                    f"{summary.images} images; GAIC's journal version has {expected} in {split}",
                )
            )
    return report


def _check_split(root: Path, split: str, summary: SplitSummary, problems: list[Problem]) -> list[str] | None:
    """Images and annotation files of one split; returns the image names (None: no folders)."""
    image_dir, ann_dir = root / "images" / split, root / "annotations" / split
    missing = [d for d in (image_dir, ann_dir) if not d.is_dir()]
    for folder in missing:
        problems.append(Problem("error", folder, f"folder not found (expected under {root})"))
    if missing:
        return None
    images = image_files(image_dir)
    annotations = {p.stem: p for p in ann_dir.iterdir() if p.suffix == ".txt" and not p.name.startswith(".")}
    summary.images, summary.annotations = len(images), len(annotations)
    if not images:
        problems.append(Problem("error", image_dir, "no images"))
    stems = {p.stem for p in images}
    for stem in sorted(set(annotations) - stems):
        problems.append(Problem("error", annotations[stem], "annotation file without an image"))
    for image in images:
        ann = annotations.get(image.stem)
        if ann is None:
            problems.append(Problem("error", image, f"no annotation file {ann_dir / (image.stem + '.txt')}"))
            continue
        try:
            width, height = image_size(image)
        except DatasetError as exc:
            problems.append(Problem("error", image, str(exc).removeprefix(f"{image}: ")))
            continue
        summary.crops += _check_annotation(ann, width, height, problems)
    return [p.name for p in images]


def _check_annotation(path: Path, width: int, height: int, problems: list[Problem]) -> int:
    """Every line of one annotation file; returns the number of rated crops."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem("error", path, f"cannot read ({exc})"))
        return 0
    rated = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        try:
            crop = parse_crop_line(line, width, height)
        except ValueError as exc:
            problems.append(Problem("error", path, str(exc), lineno))
            continue
        if crop is None:
            continue
        if not MOS_RANGE[0] <= crop.mos <= MOS_RANGE[1]:
            problems.append(Problem("error", path, f"MOS {crop.mos:g} outside 1..5 (unrated is -2)", lineno))
        if crop.outside_px > OUTSIDE_TOLERANCE_PX:
            problems.append(
                Problem(
                    "error",
                    path,
                    f"crop {line.strip()!r} reaches {crop.outside_px:g} px outside the {width}x{height} image "
                    "(order is y1 x1 y2 x2 MOS)",
                    lineno,
                )
            )
        rated += 1
    if not rated:
        problems.append(Problem("warning", path, "no rated crops (the image trains the score loss only)"))
    return rated


def _check_captions(
    text_dir: Path, split: str, names: list[str], summary: SplitSummary, problems: list[Problem]
) -> None:
    """The split's caption file: a JSON object, image file name -> one non-empty caption."""
    path = text_dir / f"{CAPTION_FILES[split]}.json"
    if not path.is_file():
        problems.append(Problem("error", path, f"caption file not found (split {split!r} uses this name)"))
        return
    try:
        captions = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(Problem("error", path, f"not valid JSON ({exc})"))
        return
    if not isinstance(captions, dict):
        problems.append(Problem("error", path, "expected a JSON object mapping image file name -> caption"))
        return
    summary.captions = len(captions)
    for name, caption in captions.items():
        if not isinstance(caption, str) or not caption.strip():
            problems.append(
                Problem("error", path, f"caption of {name!r} is not a non-empty string: {caption!r}")
            )
    for name in names:
        if name not in captions:
            problems.append(Problem("error", path, f"no caption for {name}"))
    for name in sorted(set(captions) - set(names)):
        problems.append(Problem("warning", path, f"caption for {name}, which is not an image of {split}"))


__all__ = [
    "GAIC_SPLIT_SIZES",
    "OUTSIDE_TOLERANCE_PX",
    "DataReport",
    "Problem",
    "SplitSummary",
    "check_gaic",
]
