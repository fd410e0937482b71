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
    """The image with ranked boxes drawn and numbered (1 = best)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    sx = out.width / original_size[0]
    sy = out.height / original_size[1]
    width = max(2, round(min(out.size) / 200))
    font = ImageFont.load_default(size=max(12, round(min(out.size) / 25)))
    for rank, box in reversed(list(enumerate(boxes, start=1))):
        color = COLORS[(rank - 1) % len(COLORS)]
        x0, y0, x1, y1 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=color, width=width)
        label = str(rank) if scores is None else f"{rank}: {scores[rank - 1]:.2f}"
        tb = draw.textbbox((x0 + width, y0 + width), label, font=font)
        draw.rectangle(tb, fill=color)
        draw.text((x0 + width, y0 + width), label, fill="black", font=font)
    return out


def encode_image(
    image: Image.Image, fmt: str = "jpeg", quality: int = 92, metadata: OutputMetadata | None = None
) -> tuple[bytes, str]:
    """Encode to bytes; returns (data, media type). ``fmt`` is jpeg, png or webp.

    ``metadata`` (see :func:`clipcrop.metadata.output_metadata`) is embedded: ICC profile and EXIF.
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
    """Write an image so that a reader never sees a half-written file (see :mod:`clipcrop.atomic_files`:
    temporary file, fsync, rename; permissions from the umask). ``metadata`` as :func:`encode_image`;
    without ``overwrite`` an existing file is kept and :class:`~clipcrop.errors.OutputExistsError` raised."""
    data, _ = encode_image(image, fmt, metadata=metadata)
    return write_atomic(path, data, overwrite=overwrite)
