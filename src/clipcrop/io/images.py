"""Safe image loading shared by every surface.

Order of work, cheapest check first, so hostile files cost almost nothing:

1. size of the file (``Limits.max_file_bytes``), also for bytes handed to :func:`decode_bytes`;
2. magic bytes: vector/document formats (SVG, PDF, EPS) are refused outright, and so are raster
   formats that are not in ``Limits.allowed_formats`` or that this installation cannot decode
   (HEIF without a plugin, PSD, JPEG 2000, JPEG XL, ...): :class:`UnsupportedFormatError`;
3. header only (``Image.open`` does not decode): pixels <= ``Limits.max_pixels``?  A WebP canvas is
   checked from its first 30 bytes *before* Pillow builds its decoder (libwebp allocates the
   canvas up front), GIF frame extents and TIFF tile sizes are checked as well;
4. decode the *first frame* only, JPEGs reduced while decoding (``draft``) towards
   ``Limits.decode_max_side``, since the backbone only sees 768 px;
5. EXIF orientation applied (read *after* decoding, so that a truncated file is never
   half-loaded by the EXIF lookup; TIFF orientation is applied by Pillow itself), then any mode
   (palette, RGBA, LA, CMYK, 16-bit, float) made RGB, big non-JPEG images reduced by an integer
   factor first when their mode allows it.

Whatever the bytes, :func:`decode_bytes` raises only :class:`~clipcrop.errors.ClipCropError`
subclasses (``UnreadableImageError``, ``UnsupportedFormatError``, ``ImageTooLargeError``,
``FileTooLargeError``); Pillow's and numpy's warnings are silenced while it runs.

Polyglots (a valid image with a ZIP, HTML or script appended or hidden in metadata) load as the
image they are: only the pixels are used, the original bytes are never served back.

The result keeps the size of the *upright original* so that boxes computed on the reduced
image map back to the original's pixels exactly (boxes travel normalised in between).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import stat
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import (
    ClipCropError,
    FileTooLargeError,
    ImageTooLargeError,
    UnreadableImageError,
    UnsupportedFormatError,
)
from ..limits import DEFAULT_LIMITS, Limits

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

_ACCEPTED_HINT = "use JPEG, PNG, WebP, GIF, BMP or TIFF"

_REFUSED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "PDF"),
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
)

# Raster formats recognised by their first bytes, so that a refused-format sniff never fires on
# them (an SVG snippet in a JPEG comment is still a JPEG) and so that a format missing from
# ``Limits.allowed_formats`` gets a clear "not accepted" error.
_RASTER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
)

# Formats Pillow cannot (or may not) decode here but that users do upload: named in the error.
_KNOWN_UNSUPPORTED: tuple[tuple[int, bytes, str], ...] = (
    (0, b"8BPS", "Photoshop (PSD)"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (0, b"qoif", "QOI"),
    (0, b"icns", "ICNS"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}

# EXIF orientations that swap width and height.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}

# TIFF tiles are decoded whole: a tiny file may declare a 16384x16384 tile for a 16x16 image, and
# libtiff then allocates the full tile.  Tiles larger than the image and than this are refused.
_MAX_TILE_PIXELS_BEYOND_IMAGE = 1 << 20

# Modes Image.reduce handles (alpha modes are premultiplied by Pillow while reducing).
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"})


@dataclass(frozen=True)
class LoadedImage:
    """A decoded, upright RGB image plus the geometry of the original.

    Attributes:
        image: RGB ``PIL.Image``; possibly reduced while decoding (see ``scale``).
        width, height: size in pixels of the *upright original* image; all boxes ClipCrop
            returns are in this pixel space.
        format: Pillow's format name of the source (``"JPEG"``, ...), or ``None`` for arrays.
        name: a display name (file path or ``"<bytes>"``).
        icc_profile: the source's embedded ICC profile, byte for byte, or None.
        exif: the source's raw EXIF block (as Pillow reads it: JPEG APP1, PNG eXIf, WebP EXIF), or
            None. Kept so that crops written from this image carry both (see :mod:`clipcrop.io.metadata`);
            ``image`` itself holds pixels only.
    """

    image: Image.Image
    width: int
    height: int
    format: str | None
    name: str
    icc_profile: bytes | None = None
    exif: bytes | None = None

    @property
    def scale(self) -> float:
        """Decoded width / original width (1.0 when decoded at full size)."""
        return self.image.width / self.width


def sniff_raster_format(data: bytes) -> str | None:
    """Pillow's name of the raster format whose signature ``data`` starts with, else None."""
    for sig, name in _RASTER_SIGNATURES:
        if data.startswith(sig):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _AVIF_BRANDS:
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return "HEIF"
    return None


def sniff_refused_format(head: bytes) -> str | None:
    """Name of a refused vector/document format whose signature ``head`` carries, else None.

    ``head`` is the start of the file (1 kB is plenty).  Files that start like a raster image are
    never refused here, whatever text they carry later (comments, metadata, appended data).
    """
    if sniff_raster_format(head):
        return None
    stripped = head.lstrip()
    for sig, name in _REFUSED_SIGNATURES:
        if stripped.startswith(sig):
            return name
    if b"%PDF-" in head[:1024]:  # PDF readers accept up to 1 kB of junk before the header
        return "PDF"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 text
        try:
            text = head[:2048].decode("utf-16", errors="ignore").encode("ascii", errors="ignore")
        except Exception:  # noqa: BLE001 - any odd byte count: not UTF-16 after all
            text = b""
        stripped = text.lstrip()
    if stripped.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte order mark
        stripped = stripped[3:].lstrip()
    low = stripped[:1024].lower()
    if low.startswith((b"<?xml", b"<svg", b"<!doctype svg")) or b"<svg" in low:
        return "SVG"
    return None


def _known_unsupported(data: bytes, open_formats: list[str]) -> str | None:
    """Name of a format users upload that this installation cannot decode, else None."""
    for offset, sig, name in _KNOWN_UNSUPPORTED:
        if data[offset : offset + len(sig)] == sig:
            return name
    guess = sniff_raster_format(data)
    if guess in ("HEIF", "AVIF") and guess not in open_formats:  # no plugin: say so
        return "HEIF/HEIC" if guess == "HEIF" else "AVIF"
    return None


def _webp_canvas_size(data: bytes) -> tuple[int, int] | None:
    """Canvas size of a WebP file from its first 30 bytes (as libwebp reads it), else None."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _safe_name(name: object) -> str:
    """A display name fit for one error line: control characters replaced, length capped."""
    text = _UNPRINTABLE.sub("\ufffd", str(name))
    return text if len(text) <= 200 else text[:100] + "\u2026" + text[-99:]


def _exc_text(exc: BaseException) -> str:
    return _safe_name(f"{type(exc).__name__}: {exc}")


def _too_large(name: str, w: int, h: int, limits: Limits) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"{name}: {w}x{h} = {w * h / 1e6:.1f} MP, above the limit of {limits.max_pixels / 1e6:.1f} MP "
        "(raise it with Limits(max_pixels=...) or CLIPCROP_MAX_MEGAPIXELS)"
    )


def _check_pixels(name: str, w: int, h: int, limits: Limits) -> None:
    if w <= 0 or h <= 0:
        raise UnreadableImageError(f"{name}: image has no pixels ({w}x{h})")
    if w * h > limits.max_pixels:
        raise _too_large(name, w, h, limits)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Pillow's warnings (corrupt EXIF, bomb warnings: we raise our own errors) and numpy's
    floating-point warnings while decoding.  Note: ``warnings.catch_warnings`` is process-global."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        with np.errstate(all="ignore"):
            yield


def read_bytes_limited(path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Read a file, refusing it *before* reading when it exceeds ``limits.max_file_bytes``.

    Never reads more than ``max_file_bytes + 1`` bytes, so pipes and devices (``/dev/zero``) are
    safe too.  Raises UnreadableImageError (missing, folder, unreadable) or FileTooLargeError.
    """
    p = Path(path)
    shown = _safe_name(p)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise UnreadableImageError(f"{shown}: no such file") from None
    except (OSError, ValueError) as exc:  # ValueError: embedded NUL byte in the path
        raise UnreadableImageError(
            f"{shown}: cannot read ({getattr(exc, 'strerror', None) or exc})"
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise UnreadableImageError(f"{shown}: is a folder, not an image file")
    if stat.S_ISREG(st.st_mode) and st.st_size > limits.max_file_bytes:
        raise _file_too_large(shown, st.st_size, limits)
    try:
        with open(p, "rb") as fh:
            data = fh.read(limits.max_file_bytes + 1)
    except OSError as exc:
        raise UnreadableImageError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limits.max_file_bytes:
        raise _file_too_large(shown, None, limits)
    return data


def _file_too_large(name: str, size: int | None, limits: Limits) -> FileTooLargeError:
    what = f"file is {size / 1e6:.1f} MB" if size is not None else "file is"
    return FileTooLargeError(
        f"{name}: {what} above the limit of {limits.max_file_bytes / 1e6:.1f} MB "
        "(raise it with Limits(max_file_bytes=...) or CLIPCROP_MAX_UPLOAD_MB)"
    )


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
        reduce: reduce big images while decoding towards ``limits.decode_max_side`` (set False to
            get full resolution, e.g. to write crops out).
        name: display name for messages; defaults to the path.

    Raises:
        UnreadableImageError, UnsupportedFormatError, ImageTooLargeError, FileTooLargeError;
        TypeError for a source of an unsupported Python type (a programming error).
    """
    if isinstance(source, Image.Image):
        return _from_pil(source, limits, _safe_name(name or "<image>"), fmt=source.format)
    if isinstance(source, np.ndarray):
        return _from_array(source, limits, _safe_name(name or "<array>"))
    if isinstance(source, str | os.PathLike):
        display = name or str(source)
        data = read_bytes_limited(source, limits)
    elif isinstance(source, bytes | bytearray | memoryview):
        display = name or "<bytes>"
        data = bytes(source)
    elif hasattr(source, "read"):
        display = _safe_name(name or getattr(source, "name", "<stream>"))
        try:
            data = source.read(limits.max_file_bytes + 1)
        except OSError as exc:
            raise UnreadableImageError(f"{display}: cannot read ({exc.strerror or exc})") from None
        if isinstance(data, str):
            raise TypeError(f"{display}: stream is in text mode; open it in binary mode ('rb')")
        data = bytes(data or b"")
    else:
        raise TypeError(f"cannot load an image from {type(source).__name__}")
    return decode_bytes(data, limits, name=str(display), reduce=reduce)


def _open_formats(limits: Limits) -> list[str]:
    """``limits.allowed_formats`` that Pillow can open here (MPO files are opened by the JPEG opener;
    HEIF/AVIF only with their plugin).  Unknown names made ``Image.open`` raise KeyError."""
    Image.init()
    allowed = [f.upper() for f in limits.allowed_formats]
    if "MPO" in allowed and "JPEG" not in allowed:
        allowed.append("JPEG")
    return [f for f in dict.fromkeys(allowed) if f in Image.OPEN]


def _format_allowed(fmt: str | None, limits: Limits) -> bool:
    allowed = {f.upper() for f in limits.allowed_formats}
    return fmt is None or fmt.upper() in allowed or (fmt == "MPO" and "JPEG" in allowed)


def decode_bytes(
    data: bytes, limits: Limits = DEFAULT_LIMITS, *, name: str = "<bytes>", reduce: bool = True
) -> LoadedImage:
    """Decode encoded image bytes with every check of :func:`load_image`.

    Only :class:`~clipcrop.errors.ClipCropError` subclasses escape, whatever ``data`` holds.
    """
    name = _safe_name(name)
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"decode_bytes needs bytes, not {type(data).__name__}")
    if not data:
        raise UnreadableImageError(f"{name}: file is empty")
    if len(data) > limits.max_file_bytes:
        raise _file_too_large(name, len(data), limits)
    refused = sniff_refused_format(data[:1024])
    if refused:
        raise UnsupportedFormatError(f"{name}: {refused} files are not accepted; {_ACCEPTED_HINT}")
    guess = sniff_raster_format(data)
    if guess is not None and not _format_allowed(guess, limits):
        raise UnsupportedFormatError(
            f"{name}: {guess} images are not accepted here; allowed: {', '.join(limits.allowed_formats)}"
        )
    webp = _webp_canvas_size(data)
    if webp is not None:  # before Pillow: libwebp allocates the whole canvas when the decoder is built
        _check_pixels(name, webp[0], webp[1], limits)
    with _quiet():
        try:
            return _decode(data, limits, name, reduce)
        except ClipCropError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(
                f"{name}: too many pixels to decode safely (Pillow: {_exc_text(exc)})"
            ) from None
        except MemoryError:
            raise ImageTooLargeError(f"{name}: not enough memory to decode this image") from None
        except RecursionError:
            raise UnreadableImageError(f"{name}: corrupt image (self-referencing metadata)") from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, ...
            raise UnreadableImageError(
                f"{name}: truncated or corrupt image data ({_exc_text(exc)})"
            ) from None


def _decode(data: bytes, limits: Limits, name: str, reduce: bool) -> LoadedImage:
    formats = _open_formats(limits)
    try:
        img = Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        known = _known_unsupported(data, formats)
        if known:
            raise UnsupportedFormatError(
                f"{name}: {known} images are not supported by this installation; {_ACCEPTED_HINT}"
            ) from None
        guess = sniff_raster_format(data)
        if guess:
            raise UnreadableImageError(f"{name}: {guess} file with a corrupt or truncated header") from None
        raise UnreadableImageError(f"{name}: not a recognised image ({_ACCEPTED_HINT})") from None
    except (ClipCropError, Image.DecompressionBombError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on corrupt headers
        raise UnreadableImageError(f"{name}: corrupt image header ({_exc_text(exc)})") from None
    fmt = img.format
    if not _format_allowed(fmt, limits):
        raise UnsupportedFormatError(f"{name}: {fmt} images are not accepted here; {_ACCEPTED_HINT}")
    # For TIFF, Pillow reports the upright size already (and applies the orientation on load).
    w, h = img.size
    _check_pixels(name, w, h, limits)
    if fmt == "TIFF":
        _check_tiff_tiles(img, name, w, h, limits)
    if reduce and fmt in ("JPEG", "MPO") and max(w, h) > limits.decode_max_side:
        # draft() picks the strongest 1/2, 1/4, 1/8 reduction that stays >= the size asked for;
        # asking for half the limit lands the long side in [limit/2, limit): a 40 MP photo then
        # costs less to decode than a 4 MP one, and still has more pixels than the backbone uses
        scale = limits.decode_max_side / 2 / max(w, h)
        img.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
    try:
        img.load()  # first frame only: animated files are never seeked further
    except (ClipCropError, Image.DecompressionBombError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt data raise OSError, SyntaxError, ValueError...
        raise UnreadableImageError(f"{name}: truncated or corrupt image data ({_exc_text(exc)})") from None
    orientation = _orientation(img)  # after load: PNG's getexif() would load (and hide errors)
    if orientation in _TRANSPOSED_ORIENTATIONS:
        w, h = h, w
    return _finish(img, w, h, fmt, name, orientation, limits if reduce else None)


def _source_metadata(img: Image.Image) -> dict:
    """The ICC profile and raw EXIF block of a loaded image (for :class:`LoadedImage`)."""
    from .metadata import source_exif

    icc = img.info.get("icc_profile")
    return {"icc_profile": icc if isinstance(icc, bytes) and icc else None, "exif": source_exif(img)}


def _check_tiff_tiles(img: Image.Image, name: str, w: int, h: int, limits: Limits) -> None:
    tags = getattr(img, "tag_v2", None)
    if tags is None:
        return
    tw, th = tags.get(322), tags.get(323)
    if isinstance(tw, int) and isinstance(th, int):
        area = tw * th
        if area > limits.max_pixels or area > max(w * h, _MAX_TILE_PIXELS_BEYOND_IMAGE):
            raise ImageTooLargeError(
                f"{name}: TIFF tiles of {tw}x{th} pixels for a {w}x{h} image would be decoded whole; refused"
            )


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


def _reduce(img: Image.Image, max_side: int) -> Image.Image:
    """Reduce by an integer factor when the longer side exceeds ``2 * max_side`` (mode permitting)."""
    if max(img.size) > 2 * max_side and img.mode in _REDUCIBLE_MODES:
        return img.reduce(max(img.size) // max_side)
    return img


def _finish(
    img: Image.Image,
    width: int,
    height: int,
    fmt: str | None,
    name: str,
    orientation: int,
    limits: Limits | None,
) -> LoadedImage:
    meta = _source_metadata(img)  # before conversions, which drop Pillow's info
    if limits is not None:
        # formats without draft (PNG, WebP, ...): reduce before converting, to convert fewer pixels
        img = _reduce(img, limits.decode_max_side)
    rgb = to_rgb(img)
    if limits is not None:
        rgb = _reduce(rgb, limits.decode_max_side)  # modes that could not be reduced before (P, 1, I;16)
    for op in _TRANSPOSE.get(orientation, []):
        rgb = rgb.transpose(op)
    if width != height and rgb.width != rgb.height and (rgb.width > rgb.height) != (width > height):
        # the decoder already applied an orientation we could not see: trust the pixels
        logger.debug("%s: decoded image is transposed relative to its header; swapping size", name)
        width, height = height, width
    return LoadedImage(image=rgb, width=width, height=height, format=fmt, name=name, **meta)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Transparency is composited on white; 16-bit and float are rescaled
    (NaN and infinities are clamped)."""
    mode = img.mode
    has_key = "transparency" in img.info and mode in ("P", "L", "RGB", "1")
    if mode == "RGB" and not has_key:
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        else:
            finite = arr[np.isfinite(arr)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
            arr = np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo)
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        gray = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if has_key or mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        if mode == "La":
            img = img.convert("RGBa")
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _from_pil(img: Image.Image, limits: Limits, name: str, fmt: str | None) -> LoadedImage:
    with _quiet():
        try:
            w, h = img.size
            _check_pixels(name, w, h, limits)
            img.load()
            orientation = _orientation(img)
            if orientation in _TRANSPOSED_ORIENTATIONS:
                w, h = h, w
            return _finish(img, w, h, fmt, name, orientation, None)
        except ClipCropError:
            raise
        except MemoryError:
            raise ImageTooLargeError(f"{name}: not enough memory to convert this image") from None
        except Exception as exc:  # noqa: BLE001
            raise UnreadableImageError(
                f"{name}: truncated or corrupt image data ({_exc_text(exc)})"
            ) from None


def _from_array(arr: np.ndarray, limits: Limits, name: str) -> LoadedImage:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise UnreadableImageError(f"{name}: array of shape {arr.shape} is not an HxW, HxWx3 or HxWx4 image")
    if arr.ndim >= 2 and arr.shape[0] * arr.shape[1] > limits.max_pixels:
        raise _too_large(name, arr.shape[1], arr.shape[0], limits)
    if arr.dtype != np.uint8:
        with np.errstate(all="ignore"):
            if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
                arr = arr * 255.0
            arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    return _from_pil(Image.fromarray(arr), limits, name, fmt=None)


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has an image extension (used for folder expansion)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
