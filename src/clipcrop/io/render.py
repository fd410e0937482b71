"""Pictures of results: crops cut out of the full-resolution image, and overlays with ranked boxes.

Shared by the CLI (``--out``, ``--overlay``), the batch job (``--crops-out``) and the service
(``/v1/crop/image``): crops are cut at full resolution, then resized to an exact ``output_size``
when one was asked for (:func:`at_output_size`); overlays draw crops solid and priors dashed.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..crop_options import Prior
from ..ops.label_layout import Rect, layout_labels
from .atomic_files import write_atomic
from .metadata import JPEG_MAX_EXIF, OutputMetadata, output_metadata, without_maker_note

logger = logging.getLogger(__name__)

COLORS = ["#ff3b30", "#ffcc00", "#34c759", "#0a84ff", "#af52de", "#ff9500", "#5ac8fa", "#ff2d55"]
FORMATS = {
    "jpeg": ("JPEG", "image/jpeg"),
    "jpg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
    "webp": ("WEBP", "image/webp"),
}


def cut(image: Image.Image, box: Sequence[int], original_size: tuple[int, int]) -> Image.Image:
    """Cut ``box`` (xyxy pixels of the original image) out of ``image``, which may be a reduced decode."""
    sx = image.width / original_size[0]
    sy = image.height / original_size[1]
    x0, y0, x1, y1 = box
    return image.crop(
        (
            round(x0 * sx),
            round(y0 * sy),
            max(round(x1 * sx), round(x0 * sx) + 1),
            max(round(y1 * sy), round(y0 * sy) + 1),
        )
    )


def at_output_size(picture: Image.Image, output_size: Sequence[int] | None) -> Image.Image:
    """``picture`` resized to exactly ``output_size`` (width, height) with Lanczos resampling (the
    sharpest of Pillow's filters for photos, downscaling and upscaling alike); unchanged when no
    size was asked for or it has it already. Whether a crop may be enlarged is decided where
    ``output_size`` is computed (:meth:`clipcrop.crop_options.CropOptions.output_size`)."""
    if output_size is None:
        return picture
    size = (int(output_size[0]), int(output_size[1]))
    if picture.size == size:
        return picture
    return picture.resize(size, Image.Resampling.LANCZOS)


def crop_names(aspects: Sequence[str | None], several: bool) -> list[str]:
    """The name of each crop in tables and overlays, from each crop's ratio label (crops grouped by
    ratio, best first): its rank, or with ``several`` ratios ``"4:5 #1"`` (``"free #1"``)."""
    seen: dict[str | None, int] = {}
    names = []
    for aspect in aspects:
        seen[aspect] = seen.get(aspect, 0) + 1
        names.append(f"{aspect or 'free'} #{seen[aspect]}" if several else str(seen[aspect]))
    return names


#: outline colour of each prior kind; priors are drawn dashed, so they never read as crops
PRIOR_COLORS = {"keep": "#30d158", "avoid": "#ff453a", "face": "#64d2ff"}


def draw_overlay(
    image: Image.Image,
    boxes: Sequence[Sequence[int]],
    original_size: tuple[int, int],
    scores: Sequence[float] | None = None,
    *,
    names: Sequence[str] | None = None,
    priors: Sequence[Prior] = (),
) -> Image.Image:
    """The image with ranked boxes drawn and numbered (1 = best) and ``priors`` (pixel boxes of the
    original image) drawn dashed in their kind's colour (:data:`PRIOR_COLORS`) and labelled
    ``keep``/``avoid``/``face``; no two labels cover each other (placed by :func:`overlay_labels`,
    crops first, drawn over every box). ``names`` replace the rank numbers (e.g. ``"4:5 #1"``)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = _line_width(out.size)
    prior_boxes = _scaled_boxes([p.box for p in priors], out.size, original_size)
    for prior, box in zip(priors, prior_boxes, strict=True):
        _dashed_rectangle(draw, box, PRIOR_COLORS[prior.kind], width, dash=4 * width)
    scaled = _scaled_boxes(boxes, out.size, original_size)
    for rank, (x0, y0, x1, y1) in reversed(list(enumerate(scaled, start=1))):
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=COLORS[(rank - 1) % len(COLORS)], width=width)
    font = _label_font(out.size)
    labels = overlay_labels(out.size, boxes, original_size, scores, names=names, priors=priors)
    fills = [COLORS[i % len(COLORS)] for i in range(len(boxes))] + [PRIOR_COLORS[p.kind] for p in priors]
    for (text, rect), fill in zip(labels, fills, strict=True):
        draw.rectangle([rect[0], rect[1], rect[2] - 1, rect[3] - 1], fill=fill)
        left, top, _, _ = font.getbbox(text)
        draw.text((rect[0] + _LABEL_PAD - left, rect[1] + _LABEL_PAD - top), text, fill="black", font=font)
    return out


def _dashed_rectangle(
    draw: ImageDraw.ImageDraw, box: Sequence[float], colour: str, width: int, dash: int
) -> None:
    """The outline of ``box`` (xyxy, x1/y1 exclusive) as dashes of ``dash`` pixels."""
    x0, y0, x1, y1 = (round(v) for v in box)
    x1, y1 = max(x0 + 1, x1 - 1), max(y0 + 1, y1 - 1)
    for a, b, horizontal in ((x0, x1, True), (y0, y1, False)):
        for start in range(a, b, 2 * dash):
            end = min(start + dash, b)
            if horizontal:
                draw.line([(start, y0), (end, y0)], fill=colour, width=width)
                draw.line([(start, y1), (end, y1)], fill=colour, width=width)
            else:
                draw.line([(x0, start), (x0, end)], fill=colour, width=width)
                draw.line([(x1, start), (x1, end)], fill=colour, width=width)


_LABEL_PAD = 3  # pixels between a label's text and the edge of its coloured background


def _line_width(size: tuple[int, int]) -> int:
    return max(2, round(min(size) / 200))


def _label_font(size: tuple[int, int]) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(12, round(min(size) / 25)))


def _scaled_boxes(
    boxes: Sequence[Sequence[float]], size: tuple[int, int], original_size: tuple[int, int]
) -> list[tuple[float, float, float, float]]:
    """Boxes in pixels of the original image -> pixels of the (possibly reduced) picture drawn on."""
    sx, sy = size[0] / original_size[0], size[1] / original_size[1]
    return [(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in boxes]


def overlay_labels(
    size: tuple[int, int],
    boxes: Sequence[Sequence[int]],
    original_size: tuple[int, int],
    scores: Sequence[float] | None = None,
    *,
    names: Sequence[str] | None = None,
    priors: Sequence[Prior] = (),
) -> list[tuple[str, Rect]]:
    """The labels of :func:`draw_overlay` on a picture of ``size``: (text, rectangle) per box, then
    per prior (its kind), rectangles xyxy (exclusive) in the picture's pixels, inside it and never
    overlapping (see :mod:`clipcrop.ops.label_layout`; crops choose their place first)."""
    font = _label_font(size)
    names = list(names) if names is not None else [str(r) for r in range(1, len(boxes) + 1)]
    texts = [n if scores is None else f"{n}: {scores[i]:.2f}" for i, n in enumerate(names)]
    texts += [p.kind for p in priors]
    sizes = []
    for text in texts:
        left, top, right, bottom = font.getbbox(text)
        sizes.append((int(right - left) + 2 * _LABEL_PAD, int(bottom - top) + 2 * _LABEL_PAD))
    every = list(boxes) + [p.box for p in priors]
    rects = layout_labels(_scaled_boxes(every, size, original_size), sizes, size, inset=_line_width(size))
    return list(zip(texts, rects, strict=True))


def encode_image(
    image: Image.Image, fmt: str = "jpeg", quality: int = 92, metadata: OutputMetadata | None = None
) -> tuple[bytes, str]:
    """Encode to bytes; returns (data, media type). ``fmt`` is jpeg, png or webp.

    ``metadata`` (see :func:`clipcrop.io.metadata.output_metadata`) is embedded: ICC profile and EXIF.
    An EXIF block too big for a JPEG segment loses its MakerNote, or else is left out (a warning).
    """
    pil_fmt, media = FORMATS[fmt.lower()]
    buf = io.BytesIO()
    kwargs = {"quality": quality} if pil_fmt in ("JPEG", "WEBP") else {}
    extra = metadata.save_kwargs() if metadata is not None else {}
    if pil_fmt == "JPEG" and len(extra.get("exif", b"")) > JPEG_MAX_EXIF:
        smaller = without_maker_note(extra["exif"])
        if smaller and len(smaller) <= JPEG_MAX_EXIF:
            extra["exif"] = smaller
        else:
            logger.warning(
                "EXIF block of %d bytes does not fit in a JPEG; written without it", len(extra["exif"])
            )
            del extra["exif"]
    picture = image.convert("RGB")  # a copy: its info (Pillow falls back to it for PNG) is cleared
    picture.info = {}
    picture.save(buf, format=pil_fmt, **kwargs, **extra)
    return buf.getvalue(), media


def metadata_for(source: object, size: tuple[int, int], **flags: bool) -> OutputMetadata:
    """The metadata of a picture of ``size`` cut from ``source`` (a ``LoadedImage``: its
    ``icc_profile`` and ``exif``); ``flags`` are ``strip_metadata`` and ``strip_icc``."""
    return output_metadata(getattr(source, "icc_profile", None), getattr(source, "exif", None), size, **flags)


def save_atomic(
    image: Image.Image,
    path: str | os.PathLike,
    fmt: str = "jpeg",
    *,
    metadata: OutputMetadata | None = None,
    overwrite: bool = True,
) -> Path:
    """Write an image so that a reader never sees a half-written file (see :mod:`clipcrop.io.atomic_files`:
    temporary file, fsync, rename; permissions from the umask). ``metadata`` as :func:`encode_image`;
    without ``overwrite`` an existing file is kept and :class:`~clipcrop.errors.OutputExistsError` raised."""
    data, _ = encode_image(image, fmt, metadata=metadata)
    return write_atomic(path, data, overwrite=overwrite)
