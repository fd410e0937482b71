"""Names of the pictures written for each input image, chosen so that they never collide.

The rule (documented in the README):

1. Each image has an *anchor*: the folder it was found in when a folder was given (directly or
   matched by a glob), else the folder the image file itself is in.
2. The *base* is the deepest folder that holds every anchor of the run: with one folder given,
   that folder; with files from one folder, that folder.
3. An image's outputs keep its path relative to the base, without the extension:
   ``dup/a/x.jpg`` and ``dup/b/x.jpg`` (``clipcrop crop dup``) give ``OUT/a/x_crop1.jpg`` and
   ``OUT/b/x_crop1.jpg``.
4. Images whose names would still meet (``x.jpg`` beside ``x.png``; compared ignoring case, for
   file systems that do) keep their extension: ``OUT/x.jpg_crop1.jpg``, ``OUT/x.png_crop1.jpg``.
5. Anything still meeting after that gets ``~2``, ``~3``, ... in input order.
6. With several aspect ratios in one call, the ratio goes before the rank, joined by a dash:
   ``OUT/x_4x5-crop1.jpg`` (``W:H`` written ``WxH``; a free crop ``free``). A one-ratio name ends
   in ``_crop<k>`` and a several-ratio name in ``-crop<k>``, so the two never meet, whatever the
   images are called (``x_4x5_crop1`` would be the one-ratio name of an image ``x_4x5``).

Paths are compared after ``os.path.abspath`` (lexically: symbolic links are not followed), so an
output is always inside the output folder. Pure path arithmetic: nothing here touches the disk.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePath


def _base_folder(anchors: Sequence[str]) -> str:
    """The deepest folder that holds every anchor (absolute)."""
    try:
        return os.path.commonpath(anchors)
    except ValueError:  # different drives (Windows): no common folder
        return ""


def _relative(image: str, base: str) -> PurePath:
    absolute = os.path.abspath(image)
    if base:
        return PurePath(os.path.relpath(absolute, base))
    drive, rest = os.path.splitdrive(absolute)
    return PurePath(drive.strip(":\\/") or "", rest.lstrip("\\/"))


def output_stems(images: Sequence[str], anchors: Sequence[str | None]) -> list[PurePath]:
    """For each image, the relative path its outputs start with (``<stem>`` of ``<stem>_crop1.jpg``).

    Args:
        images: the image paths, in input order, each once.
        anchors: per image, the folder it was found in (None: the image's own folder).

    Returns:
        relative paths, distinct even when compared ignoring case; join them to the output folder.
    """
    folders = [
        os.path.abspath(anchor) if anchor is not None else os.path.dirname(os.path.abspath(image))
        for image, anchor in zip(images, anchors, strict=True)
    ]
    base = _base_folder(folders) if folders else ""
    rels = [_relative(image, base) for image in images]
    stems = [rel.with_name(rel.stem) if rel.suffix else rel for rel in rels]
    seen = Counter(str(s).casefold() for s in stems)
    stems = [rel if seen[str(s).casefold()] > 1 else s for s, rel in zip(stems, rels, strict=True)]
    out: list[PurePath] = []
    taken: set[str] = set()
    for stem in stems:
        candidate, n = stem, 1
        while str(candidate).casefold() in taken:
            n += 1
            candidate = stem.with_name(f"{stem.name}~{n}")
        taken.add(str(candidate).casefold())
        out.append(candidate)
    return out


def aspect_tag(aspect: str | None) -> str:
    """The file-name form of a ratio label: ``"4:5"`` -> ``"4x5"``, None (free) -> ``"free"``."""
    return "free" if aspect is None else str(aspect).replace(":", "x").replace("/", "x")


def crop_path(
    out_dir: str | os.PathLike, stem: PurePath, k: int, ext: str = "jpg", *, aspect: str | None = None,
    several: bool = False,
) -> Path:  # fmt: skip
    """``OUT/<stem>_crop<k>.<ext>`` (k counts from 1, best first); with ``several`` ratios in the
    call, ``OUT/<stem>_<WxH>-crop<k>.<ext>`` for the crop made for ``aspect`` (rule 6)."""
    if several:
        return Path(out_dir) / stem.with_name(f"{stem.name}_{aspect_tag(aspect)}-crop{k}.{ext}")
    return Path(out_dir) / stem.with_name(f"{stem.name}_crop{k}.{ext}")


def crop_paths(
    out_dir: str | os.PathLike, stem: PurePath, crop_aspects: Sequence[str | None], several: bool
) -> list[Path]:
    """The picture of each crop of one result, in its order: ``crop_aspects`` holds each crop's
    ratio label; ranks count from 1 within each ratio (crops come grouped, best first)."""
    seen: Counter = Counter()
    out = []
    for aspect in crop_aspects:
        seen[aspect] += 1
        out.append(crop_path(out_dir, stem, seen[aspect], aspect=aspect, several=several))
    return out


def planned_crop_paths(
    out_dir: str | os.PathLike, stem: PurePath, aspects: Sequence[str | None], top_k: int
) -> list[Path]:
    """Every picture a call could write: ``top_k`` per ratio label in ``aspects`` (checked for
    existing files before any work)."""
    several = len(aspects) > 1
    return [
        crop_path(out_dir, stem, k, aspect=a, several=several) for a in aspects for k in range(1, top_k + 1)
    ]


def overlay_path(out_dir: str | os.PathLike, stem: PurePath, ext: str = "jpg") -> Path:
    """``OUT/<stem>_overlay.<ext>``."""
    return Path(out_dir) / stem.with_name(f"{stem.name}_overlay.{ext}")


__all__ = ["aspect_tag", "crop_path", "crop_paths", "output_stems", "overlay_path", "planned_crop_paths"]
