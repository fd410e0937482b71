"""Colour profile and EXIF of a source image, carried to the crops written from it.

What photographers expect of an export (Lightroom, thumbor, imgproxy): the crop keeps the source's
ICC profile, so that wide-gamut photos (Display P3, Adobe RGB) do not shift colour, and its EXIF
(camera, date, artist, copyright, GPS, ...), so that credit and provenance survive. ClipCrop writes:

* the ICC profile byte for byte, when it is a well-formed RGB display profile (``acsp`` signature,
  ``RGB `` colour space): the pixels written are RGB, so a CMYK or grey profile of a source that
  was converted would describe the wrong colours and is left out;
* the EXIF block re-encoded from its parsed tags with ``Orientation`` set to 1 (the pixels are
  already upright), ``PixelXDimension``/``PixelYDimension`` set to the crop's size, and without
  the embedded thumbnail (IFD1: a preview of the *uncropped* photo, which must not leak into a
  crop). An unreadable EXIF block is left out (logged at debug level), never fatal.

XMP, IPTC and comments are not carried. ``strip_metadata`` leaves out the EXIF (the ICC profile
stays, since it is colour, not metadata); ``strip_icc`` leaves out the profile too.

Imports Pillow only; the loader records the source's profile and EXIF block, the writers call
:func:`output_metadata` when they encode a picture.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from PIL import Image

logger = logging.getLogger(__name__)

#: EXIF tags (IFD0 / Exif IFD) that the writer rewrites
ORIENTATION = 0x0112
EXIF_IFD = 0x8769
PIXEL_X_DIMENSION = 0xA002
PIXEL_Y_DIMENSION = 0xA003
#: a JPEG APP1 segment holds at most 65535 bytes including its length field and "Exif\0\0"
JPEG_MAX_EXIF = 65533
#: EXIF blocks larger than this are not carried (no camera writes one; a file that does is odd)
MAX_EXIF_BYTES = 1 << 20
_MAKER_NOTE = 0x927C


@dataclass(frozen=True)
class OutputMetadata:
    """What to embed in one written picture: an ICC profile and an EXIF block (``b"Exif\\0\\0..."``),
    each None when absent or stripped."""

    icc_profile: bytes | None = None
    exif: bytes | None = None

    def save_kwargs(self) -> dict:
        """Keyword arguments for ``PIL.Image.save`` (JPEG, PNG and WebP all take both)."""
        out: dict = {}
        if self.icc_profile:
            out["icc_profile"] = self.icc_profile
        if self.exif:
            out["exif"] = self.exif
        return out


def rgb_icc_profile(profile: object) -> bytes | None:
    """``profile`` when it is a well-formed ICC profile for RGB data, else None.

    Checks the header only: at least 128 bytes, the ``acsp`` signature at byte 36, a declared
    size that fits the bytes, and the ``RGB `` data colour space at byte 16.
    """
    if not isinstance(profile, bytes) or len(profile) < 128:
        return None
    declared = int.from_bytes(profile[:4], "big")
    if profile[36:40] != b"acsp" or not 128 <= declared <= len(profile) or profile[16:20] != b"RGB ":
        return None
    return profile[:declared]


def source_exif(img: Image.Image) -> bytes | None:
    """The raw EXIF block Pillow found in ``img`` (JPEG APP1, PNG eXIf, WebP EXIF chunk), or None."""
    raw = img.info.get("exif")
    if isinstance(raw, bytes) and 0 < len(raw) <= MAX_EXIF_BYTES:
        return raw
    return None


def crop_exif(raw: bytes | None, size: tuple[int, int]) -> bytes | None:
    """The EXIF block for a picture of ``size`` cut from an image whose EXIF is ``raw``.

    Orientation becomes 1, the pixel dimensions the picture's, the thumbnail is dropped (see the
    module docstring). Returns None for no or unreadable EXIF.
    """
    if not raw:
        return None
    try:
        exif = Image.Exif()
        exif.load(raw)
        if not len(exif):
            return None
        if ORIENTATION in exif:
            exif[ORIENTATION] = 1
        if EXIF_IFD in exif:
            sub = exif.get_ifd(EXIF_IFD)
            for tag, value in ((PIXEL_X_DIMENSION, size[0]), (PIXEL_Y_DIMENSION, size[1])):
                if tag in sub:
                    sub[tag] = value
        return exif.tobytes()  # IFD0 with the Exif, GPS and Interop IFDs; IFD1 is never written
    except Exception as exc:  # noqa: BLE001 - a corrupt EXIF block only loses the EXIF
        logger.debug("leaving out an unreadable EXIF block (%s: %s)", type(exc).__name__, exc)
        return None


def without_maker_note(exif: bytes) -> bytes | None:
    """``exif`` without its MakerNote (the usual reason a block outgrows a JPEG segment)."""
    try:
        parsed = Image.Exif()
        parsed.load(exif)
        parsed.get_ifd(EXIF_IFD).pop(_MAKER_NOTE, None)
        return parsed.tobytes()
    except Exception:  # noqa: BLE001
        return None


def output_metadata(
    icc_profile: bytes | None,
    exif: bytes | None,
    size: tuple[int, int],
    *,
    strip_metadata: bool = False,
    strip_icc: bool = False,
) -> OutputMetadata:
    """What a picture of ``size`` cut from a source with ``icc_profile`` and ``exif`` carries.

    Args:
        icc_profile, exif: the source's (``LoadedImage.icc_profile`` / ``LoadedImage.exif``).
        size: (width, height) of the written picture, in its pixels.
        strip_metadata: leave out the EXIF.
        strip_icc: leave out the ICC profile too.
    """
    return OutputMetadata(
        icc_profile=None if strip_icc else rgb_icc_profile(icc_profile),
        exif=None if strip_metadata else crop_exif(exif, size),
    )


__all__ = ["OutputMetadata", "crop_exif", "output_metadata", "rgb_icc_profile", "source_exif"]
