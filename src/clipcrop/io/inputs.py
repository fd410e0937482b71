"""Expanding command-line inputs (files, folders, globs) into a stable list of image paths.

Shared by ``clipcrop crop`` and ``clipcrop batch``. Folders are searched recursively for files
with an image extension, in sorted order; an explicitly named file is always kept, whatever its
extension, so that a wrong file gets an error line instead of silently vanishing.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from .images import is_image_path


@dataclass(frozen=True)
class InputItem:
    """One input: a path to process, or an ``error`` for an input that matched nothing.

    ``folder`` is the folder argument (or glob-matched folder) the image was found in, None for a
    file named directly or matched by a glob: output names keep the path below it
    (:mod:`clipcrop.io.output_names`).
    """

    path: str
    error: str | None = None
    folder: str | None = None


def expand_inputs(items: list[str]) -> list[InputItem]:
    """Files, folders (recursive, images only, sorted) and globs -> items, duplicates removed."""
    out: list[InputItem] = []
    seen: set[str] = set()

    def add(path: str, folder: str | None = None) -> None:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            out.append(InputItem(path, folder=folder))

    for item in items:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*"), key=lambda q: str(q)):
                if f.is_file() and is_image_path(f):
                    add(str(f), item)
        elif p.exists():
            add(item)
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            files: list[tuple[str, str | None]] = [
                (m, None) for m in matches if Path(m).is_file() and is_image_path(m)
            ]
            for m in matches:
                if Path(m).is_dir():
                    files.extend(
                        (str(f), m) for f in sorted(Path(m).rglob("*")) if f.is_file() and is_image_path(f)
                    )
            if not files:
                out.append(InputItem(item, error=f"{item}: no image matches this pattern"))
            for f, folder in files:
                add(f, folder)
        else:
            out.append(InputItem(item, error=f"{item}: no such file or folder"))
    return out
