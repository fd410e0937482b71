"""Safe image loading shared by every surface.

Order of work, cheapest check first, so hostile files cost almost nothing:

1. size of the file (``Limits.max_file_bytes``);
2. magic bytes: vector/document formats (SVG, PDF, EPS) are refused outright;
3. header only (``Image.open`` does not decode): format allowed? pixels <= ``Limits.max_pixels``?
4. decode the *first frame* only, JPEGs reduced while decoding (``draft``) towards
   ``Limits.decode_max_side``, since the backbone only sees 768 px;
5. EXIF orientation applied, then any mode (palette, RGBA, LA, CMYK, 16-bit, float) made RGB.

The result keeps the size of the *upright original* so that boxes computed on the reduced
image map back to the original's pixels exactly (boxes travel normalised in between).
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import (
    FileTooLargeError,
    ImageTooLargeError,
    UnreadableImageError,
    UnsupportedFormatError,
)
from .limits import DEFAULT_LIMITS, Limits

logger = logging.getLogger(__name__)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".png",
        ".webp",
        ".gif",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".avif",
    }
)

_REFUSED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "PDF"),
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
)

# EXIF orientations that swap width and height.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class LoadedImage:
    """A decoded, upright RGB image plus the geometry of the original.

    Attributes:
        image: RGB ``PIL.Image``; possibly reduced while decoding (see ``scale``).
        width, height: size in pixels of the *upright original* image; all boxes ClipCrop
            returns are in this pixel space.
        format: Pillow's format name of the source (``"JPEG"``, ...), or ``None`` for arrays.
        name: a display name (file path or ``"<bytes>"``).
    """

    image: Image.Image
    width: int
    height: int
    format: str | None
    name: str

    @property
    def scale(self) -> float:
        """Decoded width / original width (1.0 when decoded at full size)."""
        return self.image.width / self.width


def sniff_refused_format(head: bytes) -> str | None:
    """Name of a refused vector/document format whose signature ``head`` carries, else None."""
    stripped = head.lstrip()
    for sig, name in _REFUSED_SIGNATURES:
        if stripped.startswith(sig):
            return name
    low = stripped[:512].lower()
    if low.startswith(b"<?xml") or low.startswith(b"<svg") or b"<svg" in low:
        return "SVG"
    return None


def read_bytes_limited(path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Read a file, refusing it *before* reading when it exceeds ``limits.max_file_bytes``."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise UnreadableImageError(f"{p}: no such file") from None
    except OSError as exc:
        raise UnreadableImageError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if p.is_dir():
        raise UnreadableImageError(f"{p}: is a folder, not an image file")
    if size > limits.max_file_bytes:
        raise FileTooLargeError(
            f"{p}: file is {size / 1e6:.1f} MB, above the limit of {limits.max_file_bytes / 1e6:.1f} MB"
        )
    try:
        return p.read_bytes()
    except OSError as exc:
        raise UnreadableImageError(f"{p}: cannot read ({exc.strerror or exc})") from None


def load_image(
    source: ImageSource,
    limits: Limits = DEFAULT_LIMITS,
    *,
    reduce: bool = True,
    name: str | None = None,
) -> LoadedImage:
    """Load any supported image source into an upright RGB :class:`LoadedImage`.

    Args:
        source: a path, raw bytes, a binary file object, a ``PIL.Image`` or an ``HxW[x C]`` uint8 array.
        limits: the limits to enforce (pixels, bytes, formats, decode size).
        reduce: reduce big JPEGs while decoding towards ``limits.decode_max_side`` (set False to
            get full resolution, e.g. to write crops out).
        name: display name for messages; defaults to the path.

    Raises:
        UnreadableImageError, UnsupportedFormatError, ImageTooLargeError, FileTooLargeError.
    """
    if isinstance(source, Image.Image):
        return _from_pil(source, limits, name or "<image>", fmt=source.format)
    if isinstance(source, np.ndarray):
        return _from_array(source, limits, name or "<array>")
    if isinstance(source, str | os.PathLike):
        display = name or str(source)
        data = read_bytes_limited(source, limits)
    elif isinstance(source, bytes | bytearray | memoryview):
        display = name or "<bytes>"
        data = bytes(source)
        if len(data) > limits.max_file_bytes:
            raise FileTooLargeError(
                f"{display}: {len(data) / 1e6:.1f} MB, above the limit of {limits.max_file_bytes / 1e6:.1f} MB"
            )
    elif hasattr(source, "read"):
        display = name or getattr(source, "name", "<stream>")
        data = source.read(limits.max_file_bytes + 1)
        if len(data) > limits.max_file_bytes:
            raise FileTooLargeError(f"{display}: above the limit of {limits.max_file_bytes / 1e6:.1f} MB")
    else:
        raise TypeError(f"cannot load an image from {type(source).__name__}")
    return decode_bytes(data, limits, name=str(display), reduce=reduce)


def decode_bytes(
    data: bytes, limits: Limits = DEFAULT_LIMITS, *, name: str = "<bytes>", reduce: bool = True
) -> LoadedImage:
    """Decode encoded image bytes with every check of :func:`load_image`."""
    if not data:
        raise UnreadableImageError(f"{name}: file is empty")
    refused = sniff_refused_format(data[:1024])
    if refused:
        raise UnsupportedFormatError(
            f"{name}: {refused} files are not accepted; use JPEG, PNG, WebP, GIF, BMP or TIFF"
        )
    with warnings.catch_warnings():
        # Pillow warns (and errors above 2x) for decompression bombs; our own limit below is stricter
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=list(limits.allowed_formats))
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"{name}: {exc}") from None
        except UnidentifiedImageError:
            raise UnreadableImageError(
                f"{name}: not a recognised image (or a format that is not allowed)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types on corrupt headers
            raise UnreadableImageError(
                f"{name}: corrupt image header ({type(exc).__name__}: {exc})"
            ) from None
        fmt = img.format
        w, h = img.size
        if w <= 0 or h <= 0:
            raise UnreadableImageError(f"{name}: image has no pixels ({w}x{h})")
        if w * h > limits.max_pixels:
            raise ImageTooLargeError(
                f"{name}: {w}x{h} = {w * h / 1e6:.1f} MP, above the limit of {limits.max_pixels / 1e6:.1f} MP"
            )
        orientation = _orientation(img)
        try:
            if reduce and fmt in ("JPEG", "MPO") and max(w, h) > limits.decode_max_side:
                scale = limits.decode_max_side / max(w, h)
                img.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
            img.load()  # first frame only: animated files are never seeked further
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"{name}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - truncated/corrupt data raise OSError, SyntaxError, ValueError...
            raise UnreadableImageError(
                f"{name}: truncated or corrupt image data ({type(exc).__name__}: {exc})"
            ) from None
    if orientation in _TRANSPOSED_ORIENTATIONS:
        w, h = h, w
    return _finish(img, w, h, fmt, name, orientation, limits if reduce else None)


def _orientation(img: Image.Image) -> int:
    """EXIF orientation 1..8, or 1 when absent or unreadable (a corrupt EXIF block is not fatal)."""
    try:
        value = img.getexif().get(0x0112, 1)
        value = int(value)
    except Exception:  # noqa: BLE001 - corrupt EXIF: treat as upright
        logger.debug("ignoring unreadable EXIF block")
        return 1
    return value if 1 <= value <= 8 else 1


_TRANSPOSE = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_270],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}


def _finish(
    img: Image.Image,
    width: int,
    height: int,
    fmt: str | None,
    name: str,
    orientation: int,
    limits: Limits | None,
) -> LoadedImage:
    rgb = to_rgb(img)
    for op in _TRANSPOSE.get(orientation, []):
        rgb = rgb.transpose(op)
    if limits is not None and max(rgb.size) > 2 * limits.decode_max_side:
        # formats without draft (PNG, WebP, ...): reduce after decoding, by an integer factor
        factor = max(rgb.size) // limits.decode_max_side
        rgb = rgb.reduce(factor)
    return LoadedImage(image=rgb, width=width, height=height, format=fmt, name=name)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Transparency is composited on white; 16-bit and float are rescaled."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        else:
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        gray = Image.fromarray(np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if mode == "P" and "transparency" in img.info or mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _from_pil(img: Image.Image, limits: Limits, name: str, fmt: str | None) -> LoadedImage:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise UnreadableImageError(f"{name}: image has no pixels ({w}x{h})")
    if w * h > limits.max_pixels:
        raise ImageTooLargeError(
            f"{name}: {w}x{h} = {w * h / 1e6:.1f} MP, above the limit of {limits.max_pixels / 1e6:.1f} MP"
        )
    orientation = _orientation(img)
    if orientation in _TRANSPOSED_ORIENTATIONS:
        w, h = h, w
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001
        raise UnreadableImageError(f"{name}: truncated or corrupt image data ({exc})") from None
    return _finish(img, w, h, fmt, name, orientation, None)


def _from_array(arr: np.ndarray, limits: Limits, name: str) -> LoadedImage:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise UnreadableImageError(f"{name}: array of shape {arr.shape} is not an HxW, HxWx3 or HxWx4 image")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    return _from_pil(Image.fromarray(arr), limits, name, fmt=None)


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has an image extension (used for folder expansion)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
