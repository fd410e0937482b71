"""Pictures of results: crops cut out of the full-resolution image, and overlays with ranked boxes.

Shared by the CLI (``--out``, ``--overlay``) and the service (``/v1/crop/image``).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

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


def draw_overlay(
    image: Image.Image,
    boxes: Sequence[Sequence[int]],
    original_size: tuple[int, int],
    scores: Sequence[float] | None = None,
) -> Image.Image:
    """The image with ranked boxes drawn and numbered (1 = best); no two labels cover each other
    (placed by :func:`overlay_labels`, drawn over every box)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = _line_width(out.size)
    scaled = _scaled_boxes(boxes, out.size, original_size)
    for rank, (x0, y0, x1, y1) in reversed(list(enumerate(scaled, start=1))):
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=COLORS[(rank - 1) % len(COLORS)], width=width)
    font = _label_font(out.size)
    for rank, (text, rect) in enumerate(overlay_labels(out.size, boxes, original_size, scores), start=1):
        draw.rectangle([rect[0], rect[1], rect[2] - 1, rect[3] - 1], fill=COLORS[(rank - 1) % len(COLORS)])
        left, top, _, _ = font.getbbox(text)
        draw.text((rect[0] + _LABEL_PAD - left, rect[1] + _LABEL_PAD - top), text, fill="black", font=font)
    return out


_LABEL_PAD = 3  # pixels between a label's text and the edge of its coloured background


def _line_width(size: tuple[int, int]) -> int:
    return max(2, round(min(size) / 200))


def _label_font(size: tuple[int, int]) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(12, round(min(size) / 25)))


def _scaled_boxes(
    boxes: Sequence[Sequence[int]], size: tuple[int, int], original_size: tuple[int, int]
) -> list[tuple[float, float, float, float]]:
    """Boxes in pixels of the original image -> pixels of the (possibly reduced) picture drawn on."""
    sx, sy = size[0] / original_size[0], size[1] / original_size[1]
    return [(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in boxes]


def overlay_labels(
    size: tuple[int, int],
    boxes: Sequence[Sequence[int]],
    original_size: tuple[int, int],
    scores: Sequence[float] | None = None,
) -> list[tuple[str, Rect]]:
    """The rank labels of :func:`draw_overlay` on a picture of ``size``: (text, rectangle) per box,
    rectangles xyxy (exclusive) in the picture's pixels, inside it and never overlapping (see
    :mod:`clipcrop.ops.label_layout`)."""
    font = _label_font(size)
    texts = [str(r) if scores is None else f"{r}: {scores[r - 1]:.2f}" for r in range(1, len(boxes) + 1)]
    sizes = []
    for text in texts:
        left, top, right, bottom = font.getbbox(text)
        sizes.append((int(right - left) + 2 * _LABEL_PAD, int(bottom - top) + 2 * _LABEL_PAD))
    rects = layout_labels(_scaled_boxes(boxes, size, original_size), sizes, size, inset=_line_width(size))
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
