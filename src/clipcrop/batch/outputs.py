"""Crop pictures of a batch job (``clipcrop batch --crops-out DIR``): names, the check before Ray
starts, and the writing in the workers.

Names follow :mod:`clipcrop.io.output_names` (the image's path below the folder given, or below a
manifest's folder; images elsewhere below the deepest folder holding them), so that
``DIR/<path>_crop<k>.jpg`` (``DIR/<path>_<WxH>-crop<k>.jpg`` for an input with several ratios)
never collide. An image that appears in several inputs (a manifest
with two queries for one photo) gets the first 8 hex digits of a hash of its condition and
options in its names (``DIR/x_3f9a01c2_crop1.jpg``): stable across runs, distinct per input.

Pictures keep the source's ICC profile and EXIF (see :mod:`clipcrop.io.metadata`) unless stripped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from ..crop_options import parse_aspects
from ..errors import ClipCropError, OutputExistsError
from ..io.output_names import crop_paths, output_stems, planned_crop_paths
from .manifest import MANIFEST_SUFFIXES


class CropsExistError(OutputExistsError):
    """Crop pictures a new job would write exist already; ``found`` holds their paths.

    The message speaks of :class:`~clipcrop.batch.config.BatchConfig`'s fields (``overwrite``,
    ``crops_out``); ``clipcrop batch`` words it with its flags from :attr:`what`.
    """

    def __init__(self, found: Sequence[Path]) -> None:
        self.found = list(found)
        more = f" (and {len(self.found) - 1} more)" if len(self.found) > 1 else ""
        #: which pictures exist, without what to do about them
        self.what = f"{self.found[0]} already exists{more}"
        super().__init__(f"{self.what}; set overwrite=True to replace them, or choose another crops_out")


def condition_digest(
    query: Any, image_query: Any, top_k: Any, aspect: Any, options: dict | None = None
) -> str:
    """8 hex digits naming one input's condition and options among the inputs of one image (the
    other crop options count only when set, so names made before they existed stay)."""
    parts = [query, image_query, top_k, aspect] + ([options] if options else [])
    text = json.dumps(parts, sort_keys=True, ensure_ascii=True)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def _anchor(image: str, source: str) -> str | None:
    """The folder an image's names are taken below: the folder given, a manifest's folder when the
    image is inside it, else None (its own folder)."""
    src = Path(source)
    if src.is_dir():
        return str(src)
    if src.is_file() and src.suffix.lower() in MANIFEST_SUFFIXES:
        base = os.path.abspath(src.parent)
        if os.path.commonpath([base, os.path.abspath(image)]) == base:
            return base
    return None


def plan_stems(items: Sequence[Any], source: str) -> dict[tuple, PurePath]:
    """``item.key -> stem`` for every item without an error (``BatchItem`` objects)."""
    ok = list({it.key: it for it in items if it.error is None}.values())  # an input given twice is one
    images = list(dict.fromkeys(it.image for it in ok))
    by_image = dict(zip(images, output_stems(images, [_anchor(i, source) for i in images]), strict=True))
    count = Counter(it.image for it in ok)
    stems: dict[tuple, PurePath] = {}
    taken: set[str] = set()
    for it in ok:
        stem = by_image[it.image]
        if count[it.image] > 1:
            stem = stem.with_name(
                f"{stem.name}_{condition_digest(it.query, it.image_query, it.top_k, it.aspect, it.options)}"
            )
        candidate, n = stem, 1
        while str(candidate).casefold() in taken:  # a name another image has already: never shared
            n += 1
            candidate = stem.with_name(f"{stem.name}~{n}")
        taken.add(str(candidate).casefold())
        stems[it.key] = candidate
    return stems


def _labels(aspect: Any) -> list[str | None]:
    """The ratio labels of an item's ``aspect`` (one None when it cannot be read: its error)."""
    try:
        return [label for label, _ in parse_aspects(aspect)]
    except ClipCropError:
        return [None]


def existing_targets(items: Sequence[Any], stems: dict[tuple, PurePath], out_dir: str) -> list[Path]:
    """The pictures ``items`` could write (``_crop1`` .. ``_crop<top_k>``, per ratio with several)
    that exist already."""
    listings: dict[Path, set[str]] = {}
    found: list[Path] = []
    for it in items:
        stem = stems.get(it.key)
        if stem is None or not isinstance(it.top_k, int):
            continue
        for path in planned_crop_paths(out_dir, stem, _labels(it.aspect), it.top_k):
            if path.parent not in listings:
                try:
                    listings[path.parent] = set(os.listdir(path.parent))
                except OSError:
                    listings[path.parent] = set()
            if path.name in listings[path.parent]:
                found.append(path)
    return found


def write_crops(full: Any, result: Any, base: str, flags: dict) -> list[str]:
    """Write each crop of ``result`` as ``<base>_crop<k>.jpg`` (``<base>_<WxH>-crop<k>.jpg`` with
    several ratios), cut from ``full`` (a full-resolution ``LoadedImage``) and resized to its
    ``output_size`` when a size was asked for, with its metadata; ``flags``: ``strip_metadata``,
    ``strip_icc``, ``overwrite``. Returns the paths written."""
    from ..io.render import at_output_size, cut, metadata_for, save_atomic

    size = (result.width, result.height)
    written = []
    stem = PurePath(base)
    several = len(result.aspects) > 1
    paths = crop_paths(stem.parent, PurePath(stem.name), [c.aspect for c in result], several)
    for crop, path in zip(result, paths, strict=True):
        picture = at_output_size(cut(full.image, crop.box, size), crop.output_size)
        meta = metadata_for(
            full,
            picture.size,
            strip_metadata=flags.get("strip_metadata", False),
            strip_icc=flags.get("strip_icc", False),
        )
        save_atomic(picture, path, metadata=meta, overwrite=flags.get("overwrite", False))
        written.append(str(path))
    return written


__all__ = ["CropsExistError", "condition_digest", "existing_targets", "plan_stems", "write_crops"]
