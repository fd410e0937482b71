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


def crop_path(out_dir: str | os.PathLike, stem: PurePath, k: int, ext: str = "jpg") -> Path:
    """``OUT/<stem>_crop<k>.<ext>`` (k counts from 1, best first)."""
    return Path(out_dir) / stem.with_name(f"{stem.name}_crop{k}.{ext}")


def overlay_path(out_dir: str | os.PathLike, stem: PurePath, ext: str = "jpg") -> Path:
    """``OUT/<stem>_overlay.<ext>``."""
    return Path(out_dir) / stem.with_name(f"{stem.name}_overlay.{ext}")


__all__ = ["crop_path", "output_stems", "overlay_path"]
