"""A tiny GAIC-format dataset made from real photos, for training and evaluation tests.

Each photo (shipped with scikit-image or matplotlib) is resized small and gets a GAIC-like grid of
candidate crops (three scales x a 3x3 grid of placements, plus the whole image: 28 crops), scored by
a deterministic rule around a hand-marked *subject* box of the photo:

* how much of the subject the crop keeps (most weight),
* how tightly it frames it (the subject filling ~55% of the crop is ideal),
* how close the crop's centre is to the subject's centre.

``MOS = 1 + 4 * score``, so a few tight, centred crops per image reach MOS >= 4 (GAIC's positives)
and the whole image and off-subject crops score low: a pattern a crop model can learn (and, for a
handful of images, memorise). Captions name the subject.

Layout written (what :func:`clipcrop.data.datasets.load_gaic` reads)::

    root/images/<split>/<name>.jpg
    root/annotations/<split>/<name>.txt     "y1 x1 y2 x2 MOS" per crop, pixels
    root/text/{train,valid,test}.json       {"<name>.jpg": "caption"}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from conftest import sample_photo
from PIL import Image

#: photo file -> (subject box, normalised xyxy; caption)
PHOTOS: dict[str, tuple[tuple[float, float, float, float], str]] = {
    "astronaut.png": ((0.25, 0.02, 0.62, 0.40), "a smiling astronaut"),
    "coffee.png": ((0.27, 0.00, 0.72, 0.55), "a cup of coffee"),
    "chelsea.png": ((0.35, 0.20, 0.70, 0.85), "the face of a tabby cat"),
    "rocket.jpg": ((0.44, 0.25, 0.56, 1.00), "a rocket on the launch pad"),
    "motorcycle_left.png": ((0.35, 0.28, 0.75, 0.62), "the red tank of a motorcycle"),
    "grace_hopper.jpg": ((0.28, 0.08, 0.72, 0.55), "a woman in a navy uniform"),
}
CAPTION_FILES = {"train": "train", "val": "valid", "test": "test"}
SCALES = (0.5, 0.65, 0.8)
PLACES = (0.0, 0.5, 1.0)


def grid_crops(width: int, height: int) -> np.ndarray:
    """(28, 4) float64 xyxy pixel crops: 3 scales x 3x3 placements, then the whole image."""
    crops = []
    for s in SCALES:
        cw, ch = round(s * width), round(s * height)
        for fy in PLACES:
            for fx in PLACES:
                x0, y0 = round(fx * (width - cw)), round(fy * (height - ch))
                crops.append((x0, y0, x0 + cw, y0 + ch))
    crops.append((0, 0, width, height))
    return np.asarray(crops, dtype=np.float64)


def crop_mos(crops_xyxy_norm: np.ndarray, subject_xyxy_norm: tuple[float, ...]) -> np.ndarray:
    """The deterministic quality rule: (K, 4) normalised crops -> (K,) MOS in [1, 5]."""
    c = np.asarray(crops_xyxy_norm, dtype=np.float64)
    s = np.asarray(subject_xyxy_norm, dtype=np.float64)
    inter_w = np.clip(np.minimum(c[:, 2], s[2]) - np.maximum(c[:, 0], s[0]), 0, None)
    inter_h = np.clip(np.minimum(c[:, 3], s[3]) - np.maximum(c[:, 1], s[1]), 0, None)
    s_area = (s[2] - s[0]) * (s[3] - s[1])
    c_area = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
    keep = inter_w * inter_h / s_area
    fill = inter_w * inter_h / c_area
    tight = np.clip(1 - np.abs(fill - 0.55) / 0.55, 0, 1)
    dist = np.hypot(
        ((c[:, 0] + c[:, 2]) - (s[0] + s[2])) / 2 / (c[:, 2] - c[:, 0]),
        ((c[:, 1] + c[:, 3]) - (s[1] + s[3])) / 2 / (c[:, 3] - c[:, 1]),
    )
    centred = np.clip(1 - 2 * dist, 0, 1)
    score = 0.45 * keep**2 + 0.35 * tight + 0.2 * centred
    return np.round(1 + 4 * score, 3)


@dataclass
class GaicFixture:
    """Where a written fixture lives and what it holds."""

    root: Path
    text_dir: Path
    names: dict[str, list[str]]  # split -> image file names


def write_gaic(
    root: Path,
    splits: dict[str, list[str]] | None = None,
    *,
    max_side: int = 160,
    drop_captions: tuple[str, ...] = (),
) -> GaicFixture:
    """Write the dataset under ``root``.

    Args:
        root: folder to create (``root/text`` holds the captions).
        splits: split -> photo files of :data:`PHOTOS`; default all photos in ``train`` and the
            same photos in ``test`` (training-set evaluation).
        max_side: longer side of the written JPEGs.
        drop_captions: image file names (``<stem>.jpg``) left out of the caption files.
    """
    splits = splits or {"train": list(PHOTOS), "test": list(PHOTOS)}
    root = Path(root)
    text_dir = root / "text"
    text_dir.mkdir(parents=True, exist_ok=True)
    names: dict[str, list[str]] = {}
    for split, photos in splits.items():
        img_dir, ann_dir = root / "images" / split, root / "annotations" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        captions = {}
        names[split] = []
        for photo in photos:
            subject, caption = PHOTOS[photo]
            img = Image.open(sample_photo(photo)).convert("RGB")
            scale = max_side / max(img.size)
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
            name = f"{Path(photo).stem}.jpg"
            img.save(img_dir / name, quality=92)
            crops = grid_crops(img.width, img.height)
            norm = crops / np.array([img.width, img.height, img.width, img.height], dtype=np.float64)
            mos = crop_mos(norm, subject)
            lines = [
                f"{y0:g} {x0:g} {y1:g} {x1:g} {m:.3f}" for (x0, y0, x1, y1), m in zip(crops, mos, strict=True)
            ]
            (ann_dir / f"{Path(photo).stem}.txt").write_text("\n".join(lines) + "\n")
            if name not in drop_captions:
                captions[name] = caption
            names[split].append(name)
        (text_dir / f"{CAPTION_FILES[split]}.json").write_text(json.dumps(captions, indent=1))
    return GaicFixture(root=root, text_dir=text_dir, names=names)
