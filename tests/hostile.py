"""The hostile-input corpus: images and queries that ClipCrop must refuse cleanly or load correctly.

This module is the single source of truth.  Every case is built here, in code, from bytes written
by hand (PNG with stored deflate blocks, GIF with a plain LZW writer, BMP, TIFF, EXIF, ZIP, WebP
and JPEG headers) or from a few tiny JPEG/WebP files embedded below as base64 (made once with
Pillow; the builder never calls an encoder, so its output does not depend on library versions).
``tests/make_hostile_corpus.py`` writes the same bytes to ``tests/data/hostile/`` for people to
inspect, and ``tests/test_hostile.py`` checks that the committed files still match.

Reuse from any test (``tests/`` is on ``sys.path`` under pytest)::

    from hostile import IMAGE_CASES, HOSTILE_QUERIES, expected_status

    @pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda c: c.name)
    def test_upload(client, case):
        r = client.post("/crop", files={"image": (case.filename, case.data)})
        assert r.status_code == expected_status(case)      # 200 or the error class's http_status
        if case.expect is not None:
            assert r.json()["error"]["code"] == case.expect.code

``HostileCase.expect`` is the exact :mod:`clipcrop.errors` class ``load_image(case.data)`` raises,
or ``None`` when the image is valid (then ``size`` is its upright original ``(width, height)``).
"""

from __future__ import annotations

import base64
import random
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from clipcrop.errors import (
    ClipCropError,
    ImageTooLargeError,
    QueryError,
    UnreadableImageError,
    UnsupportedFormatError,
)

__all__ = [
    "HostileCase",
    "HostileQuery",
    "IMAGE_CASES",
    "HOSTILE_QUERIES",
    "build_image_cases",
    "case_by_name",
    "valid_cases",
    "error_cases",
    "bomb_cases",
    "expected_status",
    "expected_code",
    "quadrant_color",
]


@dataclass(frozen=True)
class HostileCase:
    """One hostile (or merely unusual) image file.

    Attributes:
        name: unique identifier, usable as a pytest id and as the file's stem.
        data: the file's bytes.
        filename: the name it is uploaded / written under (its extension may lie on purpose).
        expect: the exact ClipCrop error class loading it must raise, or ``None`` if it must load.
        size: for valid cases, the upright original ``(width, height)`` ``load_image`` must report.
        bomb: a small file that claims a huge pixel count: must be refused with bounded memory.
        note: what the case is about.
        env_dependent: ``expect`` depends on the Pillow plugins installed (HEIF); see the builder.
    """

    name: str
    data: bytes
    filename: str
    expect: type[ClipCropError] | None
    size: tuple[int, int] | None = None
    bomb: bool = False
    note: str = ""
    env_dependent: bool = False

    def __repr__(self) -> str:  # keep pytest output readable: never dump the bytes
        want = self.expect.__name__ if self.expect else f"valid {self.size}"
        return f"HostileCase({self.name!r}, {len(self.data)} bytes, {self.filename!r}, {want})"


class HostileQuery(NamedTuple):
    """A text query and the result ``validate_query`` must give (``None``: valid)."""

    name: str
    query: object
    expect: type[ClipCropError] | None


def expected_status(case: HostileCase) -> int:
    """HTTP status a service must answer for an upload of ``case`` (200 when valid)."""
    return case.expect.http_status if case.expect else 200


def expected_code(case: HostileCase) -> str | None:
    """The machine-readable error ``code`` a surface must report, ``None`` when valid."""
    return case.expect.code if case.expect else None


# --------------------------------------------------------------------------------------------
# Tiny encoded images made once with Pillow (quadrants red/green/blue/yellow, see quadrant_color)
# --------------------------------------------------------------------------------------------


def _b64(*parts: str) -> bytes:
    return base64.b64decode("".join(parts))


JPEG_RGB_48x32 = _b64(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAA0JCgsKCA0LCgsODg0PEyAVExISEyccHhcgLikxMC4pLSwzOko+MzZGNywtQFdB"
    "RkxOUlNSMj5aYVpQYEpRUk//2wBDAQ4ODhMREyYVFSZPNS01T09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09P"
    "T09PT09PT09PT09PT0//wAARCAAgADADASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAA"
    "AgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6"
    "Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXG"
    "x8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREA"
    "AgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5"
    "OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPE"
    "xcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwDn6KKK8Y/SQrrq5GuurkxfQ/POPf8AmH/7"
    "f/8AbQooorjPzw80ooor95PsQr3mvBq95r828Qv+Yb/t/wD9tOzCdQooor82Ow//2Q=="
)
JPEG_PROGRESSIVE_48x32 = _b64(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAA0JCgsKCA0LCgsODg0PEyAVExISEyccHhcgLikxMC4pLSwzOko+MzZGNywtQFdB"
    "RkxOUlNSMj5aYVpQYEpRUk//2wBDAQ4ODhMREyYVFSZPNS01T09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09P"
    "T09PT09PT09PT09PT0//wgARCAAgADADASIAAhEBAxEB/8QAFgABAQEAAAAAAAAAAAAAAAAAAAUG/8QAFwEBAQEBAAAAAAAA"
    "AAAAAAAABgMEBf/aAAwDAQACEAMQAAABnjEkV5FeR4IncyHnZb3Bb03YDVv/xAAUEAEAAAAAAAAAAAAAAAAAAABA/9oACAEB"
    "AAEFAkf/xAAaEQABBQEAAAAAAAAAAAAAAAAQAAMFQ4HB/9oACAEDAQE/AVPV7wtD/8QAGhEAAQUBAAAAAAAAAAAAAAAAEAAD"
    "BkOBwf/aAAgBAgEBPwFOmQ17wf/EABQQAQAAAAAAAAAAAAAAAAAAAED/2gAIAQEABj8CR//EABQQAQAAAAAAAAAAAAAAAAAA"
    "AED/2gAIAQEAAT8hR//aAAwDAQACAAMAAAAQDAB+oC//xAAWEQADAAAAAAAAAAAAAAAAAAAQIEH/2gAIAQMBAT8QSrH/xAAW"
    "EQADAAAAAAAAAAAAAAAAAAAAIEH/2gAIAQIBAT8QJVv/xAAUEAEAAAAAAAAAAAAAAAAAAABA/9oACAEBAAE/EEf/2Q=="
)
JPEG_CMYK_32x16 = _b64(
    "/9j/7gAOQWRvYmUAZAAAAAAA/9sAQwANCQoLCggNCwoLDg4NDxMgFRMSEhMnHB4XIC4pMTAuKS0sMzpKPjM2RjcsLUBXQUZM"
    "TlJTUjI+WmFaUGBKUVJP/8AAFAgAEAAgBEMRAE0RAFkRAEsRAP/EAB8AAAEFAQEBAQEBAAAAAAAAAAABAgMEBQYHCAkKC//E"
    "ALUQAAIBAwMCBAMFBQQEAAABfQECAwAEEQUSITFBBhNRYQcicRQygZGhCCNCscEVUtHwJDNicoIJChYXGBkaJSYnKCkqNDU2"
    "Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6g4SFhoeIiYqSk5SVlpeYmZqio6Slpqeoqaqys7S1tre4ubrC"
    "w8TFxsfIycrS09TV1tfY2drh4uPk5ebn6Onq8fLz9PX29/j5+v/aAA4EQwBNAFkASwAAPwD06vMK8wr06iiiivmKvp2iiiii"
    "iivmKvp2iiiiivp2vp2vmKiiiiiv/9k="
)
JPEG_GRAY_1x1 = _b64(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAA0JCgsKCA0LCgsODg0PEyAVExISEyccHhcgLikxMC4pLSwzOko+MzZGNywtQFdB"
    "RkxOUlNSMj5aYVpQYEpRUk//wAALCAABAAEBAREA/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgED"
    "AwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RF"
    "RkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJ"
    "ytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/9oACAEBAAA/ACv/2Q=="
)
WEBP_LOSSLESS_16x8 = _b64(
    "UklGRjYAAABXRUJQVlA4TCkAAAAvD8ABAB8gEEjaH3qN+RcQFPk/2vwHXySAMNtokpOc5P2OIaL/semH+gA="
)
WEBP_LOSSY_16x8 = _b64(
    "UklGRlYAAABXRUJQVlA4IEoAAAAwAgCdASoQAAgAAsBMJagCdGuAt/8Dwvbv7gD+4vbvyXlv37MHD+dn+LL3/BD//17Ulf//"
    "1of9e3/4Jx8M7+5v/AF3gv9jfcUQAA=="
)
WEBP_ANIMATED_8x8 = _b64(
    "UklGRrgAAABXRUJQVlA4WAoAAAACAAAABwAABwAAQU5JTQYAAAAAAAAAAABBTk1GQgAAAAAAAAAAAAcAAAcAAGQAAAJWUDhM"
    "KgAAAC8HwAEAHyAQSN4fOo35FxAU+T/a/EdODkBB2zZMSZZkSb4NRET/Q/zwM0FOTUZCAAAAAAAAAAAABwAABwAAZAAAAFZQ"
    "OEwqAAAALwfAAQAfIBBI3h86jfkXEBT5P9r8R04OQEHbNkxJlmRJvg1ERP/D+NQT"
)

# --------------------------------------------------------------------------------------------
# Pixel pattern
# --------------------------------------------------------------------------------------------

_QUADRANTS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0))  # TL, TR, BL, BR


def quadrant_color(x: int, y: int, width: int, height: int) -> tuple[int, int, int]:
    """Colour of pixel (x, y) of the test pattern: red, green / blue, yellow quadrants."""
    return _QUADRANTS[(2 if y >= height // 2 else 0) + (1 if x >= width // 2 else 0)]


def _rgb_rows(width: int, height: int, bpc: int = 1, alpha: bool = False, filt: bool = True) -> bytes:
    """Scanlines of the quadrant pattern (each prefixed by PNG filter type 0 when ``filt``)."""
    out = bytearray()
    for y in range(height):
        if filt:
            out.append(0)
        for x in range(width):
            px = quadrant_color(x, y, width, height) + ((200,) if alpha else ())
            for c in px:
                out += bytes((c, c)) if bpc == 2 else bytes((c,))
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Deterministic byte writers
# --------------------------------------------------------------------------------------------


def _stored_zlib(raw: bytes) -> bytes:
    """A zlib stream of ``raw`` in stored (uncompressed) deflate blocks: identical on every zlib."""
    out = bytearray(b"\x78\x01")
    if not raw:
        out += b"\x01\x00\x00\xff\xff"
    for i in range(0, len(raw), 65535):
        block = raw[i : i + 65535]
        final = 1 if i + 65535 >= len(raw) else 0
        out += bytes((final,)) + struct.pack("<HH", len(block), len(block) ^ 0xFFFF) + block
    out += struct.pack(">I", zlib.adler32(raw) & 0xFFFFFFFF)
    return bytes(out)


def _zlib_zeros(n: int) -> bytes:
    """A tiny zlib stream that inflates to ``n`` (>= 259) zero bytes: one literal, then fixed-Huffman
    back-references of 258 bytes each (13 bits apiece, ~160:1), i.e. a zip bomb in miniature."""
    literal, run, end = (0x30, 8), [(0xC5, 8), (0, 5)], (0, 7)  # literal 0; length 258 + distance 1; EOB

    def pack(codes: list[tuple[int, int]]) -> tuple[bytes, int, int]:
        bits = [(v >> (n - 1 - i)) & 1 for v, n in codes for i in range(n)]  # Huffman codes: MSB first
        out = bytearray((len(bits) + 7) // 8)
        for i, bit in enumerate(bits):
            out[i // 8] |= bit << (i % 8)
        return bytes(out), len(bits), 0

    runs, rest = divmod(n - 1, 258)
    assert runs >= 1, "n too small"
    head, nbits, _ = pack([(0b110, 3), literal, *run])  # bits 1,1,0: BFINAL, BTYPE=01; 24 bits
    assert nbits == 24
    group, nbits, _ = pack(run * 8)  # 8 runs = 104 bits = 13 whole bytes
    tail, _, _ = pack(run * ((runs - 1) % 8) + [literal] * rest + [end])
    adler = ((n % 65521) << 16) | 1  # adler32 of n zero bytes
    return b"\x78\x01" + head + group * ((runs - 1) // 8) + tail + struct.pack(">I", adler)


# PNG -----------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    if crc is None:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _png(
    width: int,
    height: int,
    raw: bytes,
    *,
    bit_depth: int = 8,
    color_type: int = 2,
    before_idat: Iterable[bytes] = (),
    after_idat: Iterable[bytes] = (),
    idat: bytes | None = None,
) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + b"".join(before_idat)
        + _png_chunk(b"IDAT", _stored_zlib(raw) if idat is None else idat)
        + b"".join(after_idat)
        + _png_chunk(b"IEND", b"")
    )


def _png_rgb(width: int, height: int, **kw: object) -> bytes:
    return _png(width, height, _rgb_rows(width, height), **kw)  # type: ignore[arg-type]


# GIF -----------------------------------------------------------------------------------------

_GIF_PALETTE = bytes(
    c for rgb in (*_QUADRANTS, (255, 255, 255), (0, 0, 0), (128, 128, 128), (255, 0, 255)) for c in rgb
)


def _gif_lzw(indices: bytes, min_code_size: int = 3) -> bytes:
    """GIF image data for palette ``indices``: literal codes only, a clear code every few pixels so
    the code width never grows (valid for every decoder, just not compressed)."""
    clear, eoi, width = 1 << min_code_size, (1 << min_code_size) + 1, min_code_size + 1
    per_clear = (1 << min_code_size) - 4
    codes = []
    for i in range(0, len(indices), per_clear):
        codes.append(clear)
        codes.extend(indices[i : i + per_clear])
    if not codes:
        codes.append(clear)
    codes.append(eoi)
    acc = nbits = 0
    stream = bytearray()
    for c in codes:
        acc |= c << nbits
        nbits += width
        while nbits >= 8:
            stream.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        stream.append(acc & 0xFF)
    blocks = b"".join(
        bytes((len(stream[i : i + 255]),)) + stream[i : i + 255] for i in range(0, len(stream), 255)
    )
    return bytes((min_code_size,)) + blocks + b"\x00"


def _gif_frame(
    x: int, y: int, w: int, h: int, indices: bytes, *, transparent: int | None = None, delay: int = 0
) -> bytes:
    gce = b""
    if transparent is not None or delay:
        flags = 1 if transparent is not None else 0
        gce = b"\x21\xf9\x04" + struct.pack("<BHB", flags | 0x08, delay, transparent or 0) + b"\x00"
    return gce + b"\x2c" + struct.pack("<HHHHB", x, y, w, h, 0) + _gif_lzw(indices)


def _gif(screen_w: int, screen_h: int, frames: Iterable[bytes], *, loop: bool = False) -> bytes:
    head = b"GIF89a" + struct.pack("<HHBBB", screen_w, screen_h, 0x80 | 0x20 | 0x02, 0, 0) + _GIF_PALETTE
    if loop:
        head += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    return head + b"".join(frames) + b";"


def _gif_quadrant_indices(w: int, h: int) -> bytes:
    return bytes((2 if y >= h // 2 else 0) + (1 if x >= w // 2 else 0) for y in range(h) for x in range(w))


# BMP -----------------------------------------------------------------------------------------


def _bmp(width: int, height: int, *, top_down: bool = False, pixels: bytes | None = None) -> bytes:
    """24-bit BMP of the quadrant pattern (rows bottom-up unless ``top_down``)."""
    if pixels is None:
        pad = b"\0" * ((-width * 3) % 4)
        rows = []
        for y in range(height):
            row = bytearray()
            for x in range(width):
                r, g, b = quadrant_color(x, y, width, height)
                row += bytes((b, g, r))
            rows.append(bytes(row) + pad)
        pixels = b"".join(rows if top_down else rows[::-1])
    info = struct.pack(
        "<IiiHHIIiiII", 40, width, -height if top_down else height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0
    )
    return b"BM" + struct.pack("<IHHI", 14 + 40 + len(pixels), 0, 0, 54) + info + pixels


# TIFF ----------------------------------------------------------------------------------------

_SHORT, _LONG = 3, 4


def _tiff(
    width: int,
    height: int,
    pixels: bytes,
    *,
    samples: int = 3,
    bits: int = 8,
    photometric: int = 2,
    sample_format: int | None = None,
    orientation: int | None = None,
    loop_ifd: bool = False,
    strip_offset: int | None = None,
    strip_bytes: int | None = None,
    tile: tuple[int, int] | None = None,
    tiles: list[bytes] | None = None,
    compression: int = 1,
) -> bytes:
    """Little-endian TIFF with one strip (``pixels``) or with ``tiles`` of size ``tile``."""
    chunks = tiles if tile is not None and tiles is not None else [pixels]
    tags: dict[int, tuple[int, list[int]]] = {
        256: (_LONG, [width]),
        257: (_LONG, [height]),
        258: (_SHORT, [bits] * samples),
        259: (_SHORT, [compression]),
        262: (_SHORT, [photometric]),
        277: (_SHORT, [samples]),
        284: (_SHORT, [1]),
    }
    counts = [len(c) for c in chunks] if strip_bytes is None else [strip_bytes]
    if tile is None:
        tags.update({273: (_LONG, [0]), 278: (_LONG, [height]), 279: (_LONG, counts)})
        offsets_tag = 273
    else:
        tags.update({322: (_LONG, [tile[0]]), 323: (_LONG, [tile[1]]), 324: (_LONG, [0] * len(chunks))})
        tags[325] = (_LONG, counts)
        offsets_tag = 324
    if orientation is not None:
        tags[274] = (_SHORT, [orientation])
    if sample_format is not None:
        tags[339] = (_SHORT, [sample_format] * samples)
    if samples == 4 and photometric == 2:
        tags[338] = (_SHORT, [2])  # unassociated alpha

    def payload(typ: int, values: list[int]) -> bytes:
        return struct.pack(f"<{len(values)}{'H' if typ == _SHORT else 'I'}", *values)

    n = len(tags)
    ifd_end = 8 + 2 + 12 * n + 4
    data_offset = ifd_end + sum(len(payload(*tv)) for tv in tags.values() if len(payload(*tv)) > 4)
    offsets, pos = [], data_offset
    for c in chunks:
        offsets.append(pos)
        pos += len(c)
    if strip_offset is not None:
        offsets = [strip_offset]
    tags[offsets_tag] = (_LONG, offsets)
    overflow, entries = bytearray(), bytearray()
    for tag, (typ, values) in sorted(tags.items()):
        body = payload(typ, values)
        if len(body) <= 4:
            field = body.ljust(4, b"\0")
        else:
            field = struct.pack("<I", ifd_end + len(overflow))
            overflow += body
        entries += struct.pack("<HHI", tag, typ, len(values)) + field
    ifd = struct.pack("<H", n) + bytes(entries) + struct.pack("<I", 8 if loop_ifd else 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(overflow) + b"".join(chunks)


# JPEG / EXIF ---------------------------------------------------------------------------------


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, offset, total length) of each segment up to and including SOS."""
    out, i = [], 2
    while i + 4 <= len(data):
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        out.append((marker, i, 2 + length))
        if marker == 0xDA:
            break
        i += 2 + length
    return out


def _jpeg_sos_offset(data: bytes) -> int:
    return next(off for marker, off, _ in _jpeg_segments(data) if marker == 0xDA)


def _jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame header (SOFn) to claim another size; the scan data is unchanged."""
    for marker, off, _ in _jpeg_segments(data):
        if marker in (0xC0, 0xC1, 0xC2):
            return data[: off + 5] + struct.pack(">HH", height, width) + data[off + 9 :]
    raise ValueError("no SOF marker")


def _jpeg_insert(data: bytes, segment: bytes) -> bytes:
    """Insert a marker segment right after SOI."""
    return data[:2] + segment + data[2:]


def _app1_exif(tiff: bytes) -> bytes:
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _exif_tiff(entries: list[tuple[int, int, int, bytes]], ifd_offset: int = 8) -> bytes:
    """Big-endian EXIF TIFF block with one IFD of (tag, type, count, 4-byte value) entries."""
    body = struct.pack(">H", len(entries))
    for tag, typ, count, value in entries:
        body += struct.pack(">HHI", tag, typ, count) + value.ljust(4, b"\0")[:4]
    return b"MM\x00\x2a" + struct.pack(">I", ifd_offset) + body + b"\0\0\0\0"


def _exif_orientation(value: int) -> bytes:
    return _exif_tiff([(0x0112, _SHORT, 1, struct.pack(">H", value))])


# WebP ----------------------------------------------------------------------------------------


def _webp_set_canvas(data: bytes, width: int, height: int) -> bytes:
    """Patch the VP8X canvas size (24-bit width-1 / height-1 at offsets 24 and 27)."""
    assert data[12:16] == b"VP8X"
    return data[:24] + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little") + data[30:]


def _webp_vp8x_only(width: int, height: int) -> bytes:
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (width - 1).to_bytes(3, "little")
    chunk += (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def _webp_vp8l_size(data: bytes, width: int, height: int) -> bytes:
    """Patch a simple lossless WebP's VP8L header to claim another size (14 bits each)."""
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    bits = struct.unpack("<I", data[21:25])[0]
    bits = (bits & ~0x0FFFFFFF) | (width - 1) | ((height - 1) << 14)
    return data[:21] + struct.pack("<I", bits) + data[25:]


# ZIP -----------------------------------------------------------------------------------------


def _zip_stored(name: bytes, content: bytes, base: int = 0) -> bytes:
    """A one-file, stored ZIP archive; ``base`` is where it starts inside a bigger file."""
    crc = zlib.crc32(content) & 0xFFFFFFFF
    n = len(content)
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, crc, n, n, len(name), 0) + name
    local += content
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21, crc, n, n, len(name), 0, 0, 0, 0, 0, base
    )
    central += name
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), base + len(local), 0)
    return local + central + eocd


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------


def _random_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _heif_expectation() -> type[ClipCropError]:
    """HEIF is refused as unsupported unless a HEIF plugin (pillow-heif) is registered."""
    from PIL import Image

    Image.init()
    return UnreadableImageError if "HEIF" in Image.OPEN else UnsupportedFormatError


def build_image_cases() -> list[HostileCase]:
    """Build every image case (deterministic: same bytes on every machine and library version)."""
    U, S, T = UnreadableImageError, UnsupportedFormatError, ImageTooLargeError
    cases: list[HostileCase] = []

    def add(name: str, data: bytes, ext: str, expect: type[ClipCropError] | None, **kw: object) -> None:
        cases.append(HostileCase(name, data, f"{name}.{ext}", expect, **kw))  # type: ignore[arg-type]

    # --- nothing, or nothing like an image ---
    add("empty", b"", "jpg", U, note="zero bytes")
    add("empty_png", b"", "png", U, note="zero bytes")
    add("random_bytes_jpg", _random_bytes(1, 4096), "jpg", U, note="noise with an image extension")
    add("random_bytes_png", _random_bytes(2, 4096), "png", U, note="noise with an image extension")
    add("png_signature_then_noise", PNG_SIGNATURE + _random_bytes(3, 1024), "png", U)
    add("text_renamed_jpg", b"hello, I am not an image\n", "jpg", U)
    add(
        "html_renamed_png",
        b"<!doctype html><html><body><script>alert(document.domain)</script></body></html>\n",
        "png",
        U,
    )

    # --- JPEG ---
    J = JPEG_RGB_48x32
    sos = _jpeg_sos_offset(J)
    add("jpeg_valid", J, "jpg", None, size=(48, 32))
    add("jpeg_progressive", JPEG_PROGRESSIVE_48x32, "jpg", None, size=(48, 32))
    add("jpeg_cmyk", JPEG_CMYK_32x16, "jpg", None, size=(32, 16), note="Adobe CMYK JPEG")
    add("jpeg_1x1_gray", JPEG_GRAY_1x1, "jpg", None, size=(1, 1))
    add("jpeg_soi_only", J[:3], "jpg", U, note="FF D8 FF and nothing else")
    add("jpeg_header_only", J[:sos], "jpg", U, note="every marker segment up to (not including) SOS")
    add(
        "jpeg_truncated_in_scan",
        J[: sos + (len(J) - sos) // 2],
        "jpg",
        U,
        note="cut half-way through the scan",
    )
    add("jpeg_truncated_half", J[: len(J) // 2], "jpg", U)
    add("jpeg_no_eoi", J[:-2], "jpg", U, note="only the final EOI marker missing: Pillow calls it truncated")
    add(
        "jpeg_sof_claims_65000x65000",
        _jpeg_with_size(J, 65000, 65000),
        "jpg",
        T,
        bomb=True,
        note="frame header claims 4.2 GP (Pillow's own bomb error)",
    )
    add(
        "jpeg_sof_claims_8000x7000",
        _jpeg_with_size(J, 8000, 7000),
        "jpg",
        T,
        bomb=True,
        note="56 MP: above ClipCrop's 50 MP limit, below Pillow's bomb threshold",
    )
    for o in range(1, 9):
        add(
            f"jpeg_exif_orientation_{o}",
            _jpeg_insert(J, _app1_exif(_exif_orientation(o))),
            "jpg",
            None,
            size=(32, 48) if o >= 5 else (48, 32),
            note="EXIF orientation; 5-8 swap width and height",
        )
    add(
        "jpeg_exif_orientation_9",
        _jpeg_insert(J, _app1_exif(_exif_orientation(9))),
        "jpg",
        None,
        size=(48, 32),
        note="out-of-range orientation: treated as upright",
    )
    add(
        "jpeg_exif_bad_ifd_offset",
        _jpeg_insert(J, _app1_exif(_exif_tiff([(0x0112, _SHORT, 1, b"\0\x06")], ifd_offset=0xFFFFFFF0))),
        "jpg",
        None,
        size=(48, 32),
        note="corrupt EXIF: IFD offset far outside the block; ignored",
    )
    add(
        "jpeg_exif_truncated_ifd",
        _jpeg_insert(J, _app1_exif(b"MM\x00\x2a\x00\x00\x00\x08\xff\xff\x01\x12\x00\x03")),
        "jpg",
        None,
        size=(48, 32),
        note="corrupt EXIF: IFD claims 65535 entries, block ends after one tag id",
    )
    add(
        "jpeg_exif_garbage",
        _jpeg_insert(J, _app1_exif(_random_bytes(4, 200))),
        "jpg",
        None,
        size=(48, 32),
        note="corrupt EXIF: random bytes after the Exif header",
    )
    add(
        "jpeg_exif_orientation_text",
        _jpeg_insert(J, _app1_exif(_exif_tiff([(0x0112, 2, 3, b"ab\0")]))),
        "jpg",
        None,
        size=(48, 32),
        note="orientation tag holding text instead of a number: treated as upright",
    )
    add(
        "jpeg_polyglot_zip",
        J + _zip_stored(b"payload.txt", b"not executed\n", base=len(J)),
        "jpg",
        None,
        size=(48, 32),
        note="valid JPEG that is also a valid ZIP: only the image is decoded",
    )
    add(
        "jpeg_polyglot_html",
        J + b"<html><script>alert(document.cookie)</script></html>",
        "jpg",
        None,
        size=(48, 32),
        note="valid JPEG with HTML appended",
    )
    comment = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>"
    add(
        "jpeg_comment_svg",
        _jpeg_insert(J, b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment),
        "jpg",
        None,
        size=(48, 32),
        note="SVG markup in a JPEG comment must not make the JPEG look like an SVG",
    )

    # --- PNG ---
    add("png_valid", _png_rgb(48, 32), "png", None, size=(48, 32))
    add("png_1x1", _png_rgb(1, 1), "png", None, size=(1, 1))
    add("png_10000x2", _png_rgb(10000, 2), "png", None, size=(10000, 2), note="extreme aspect ratio")
    add("png_1x20000", _png_rgb(1, 20000), "png", None, size=(1, 20000), note="extreme aspect ratio")
    add("png_16bit_rgb", _png(16, 8, _rgb_rows(16, 8, bpc=2), bit_depth=16), "png", None, size=(16, 8))
    gray16 = b"".join(b"\0" + b"".join(struct.pack(">H", 4097 * x) for x in range(16)) for _ in range(8))
    add("png_16bit_gray", _png(16, 8, gray16, bit_depth=16, color_type=0), "png", None, size=(16, 8))
    rgba16 = _rgb_rows(16, 8, bpc=2, alpha=True)
    add("png_16bit_rgba", _png(16, 8, rgba16, bit_depth=16, color_type=6), "png", None, size=(16, 8))
    la = b"".join(b"\0" + bytes((x * 16, 255 - x * 16)) * 1 for _ in range(8) for x in range(1))
    la = b"".join(b"\0" + b"".join(bytes((x * 16, 255 - x * 16)) for x in range(16)) for _ in range(8))
    add("png_la", _png(16, 8, la, color_type=4), "png", None, size=(16, 8), note="grey + alpha")
    pal = _png(
        16,
        8,
        b"".join(b"\0" + bytes(x % 4 for x in range(16)) for _ in range(8)),
        color_type=3,
        before_idat=[
            _png_chunk(b"PLTE", _GIF_PALETTE[:12]),
            _png_chunk(b"tRNS", b"\x00\x80\xff\xff"),
        ],
    )
    add("png_palette_transparency", pal, "png", None, size=(16, 8), note="palette with a tRNS chunk")
    bilevel = b"".join(b"\0" + bytes((0xAA, 0x55)) for _ in range(8))
    add("png_1bit", _png(16, 8, bilevel, bit_depth=1, color_type=0), "png", None, size=(16, 8))
    add(
        "png_exif_orientation_6",
        _png_rgb(48, 32, before_idat=[_png_chunk(b"eXIf", _exif_orientation(6))]),
        "png",
        None,
        size=(32, 48),
        note="EXIF (eXIf chunk) in a PNG",
    )
    P = _png_rgb(48, 32)
    idat_at = P.index(b"IDAT") - 4
    add("png_header_only", P[:idat_at], "png", U, note="signature and IHDR, no image data")
    add("png_truncated_in_idat", P[: idat_at + 8 + 2000], "png", U, note="cut inside the IDAT chunk")
    add(
        "png_truncated_exif_after_idat",
        _png_rgb(48, 32, after_idat=[_png_chunk(b"eXIf", _exif_orientation(6))])[: idat_at + 8 + 2000],
        "png",
        U,
        note="truncated PNG whose EXIF would follow the pixels (reading EXIF must not hide the error)",
    )
    add("png_signature_only", PNG_SIGNATURE, "png", U)
    add("png_bad_ihdr_crc", P[:29] + b"\0\0\0\0" + P[33:], "png", U, note="IHDR checksum wrong")
    add("png_zero_width", _png(0, 8, b"\0" * 8), "png", U, note="IHDR width 0")
    add(
        "png_claims_100000x100000",
        _png(100000, 100000, b"", idat=_zlib_zeros(100001)),
        "png",
        T,
        bomb=True,
        note="10 GP claimed in a file of a few hundred bytes (Pillow's own bomb error)",
    )
    add(
        "png_claims_8000x8000",
        _png(8000, 8000, b"", idat=_zlib_zeros(8001 * 64)),
        "png",
        T,
        bomb=True,
        note="64 MP claimed (IDAT holds 64 rows): above the 50 MP limit, below Pillow's threshold",
    )
    ztxt = _png_chunk(b"zTXt", b"Comment\x00\x00" + _zlib_zeros(2 * 1024 * 1024))
    add(
        "png_ztxt_bomb",
        _png_rgb(4, 4, before_idat=[ztxt]),
        "png",
        U,
        bomb=True,
        note="text chunk inflating to 2 MB (Pillow refuses text chunks above 1 MB)",
    )

    # --- GIF ---
    add(
        "gif_valid",
        _gif(48, 32, [_gif_frame(0, 0, 48, 32, _gif_quadrant_indices(48, 32))]),
        "gif",
        None,
        size=(48, 32),
    )
    add("gif_1x1", _gif(1, 1, [_gif_frame(0, 0, 1, 1, b"\x00")]), "gif", None, size=(1, 1))
    anim = _gif(
        16,
        8,
        [_gif_frame(0, 0, 16, 8, bytes([i]) * 128, delay=10) for i in range(3)],
        loop=True,
    )
    add("gif_animated", anim, "gif", None, size=(16, 8), note="3 frames; only the first is decoded")
    add(
        "gif_transparency",
        _gif(16, 8, [_gif_frame(0, 0, 16, 8, _gif_quadrant_indices(16, 8), transparent=0)]),
        "gif",
        None,
        size=(16, 8),
    )
    add("gif_5000x1", _gif(5000, 1, [_gif_frame(0, 0, 5000, 1, b"\x01" * 5000)]), "gif", None, size=(5000, 1))
    G = _gif(48, 32, [_gif_frame(0, 0, 48, 32, _gif_quadrant_indices(48, 32))])
    add("gif_header_only", G[: 13 + len(_GIF_PALETTE)] + b";", "gif", U, note="screen and palette, no frame")
    add("gif_truncated", G[: len(G) // 2], "gif", U)
    add(
        "gif_screen_65535x65535",
        _gif(65535, 65535, [_gif_frame(0, 0, 1, 1, b"\x00")]),
        "gif",
        T,
        bomb=True,
        note="logical screen of 4.3 GP",
    )
    add(
        "gif_frame_extent_65535x65535",
        _gif(1, 1, [_gif_frame(0, 0, 65535, 65535, b"")]),
        "gif",
        T,
        bomb=True,
        note="1x1 screen whose first frame claims 65535x65535",
    )
    add(
        "gif_frame_extent_9000x9000",
        _gif(1, 1, [_gif_frame(0, 0, 9000, 9000, b"")]),
        "gif",
        T,
        bomb=True,
        note="81 MP frame on a 1x1 screen: above the 50 MP limit, below Pillow's bomb threshold",
    )
    poly = _gif(10799, 10, [_gif_frame(0, 0, 1, 1, b"\x00")]) + b"*/=alert(1);"
    assert poly.startswith(b"GIF89a/*") and poly.count(b"*/") == 1
    add(
        "gif_js_polyglot",
        poly,
        "gif",
        None,
        size=(10799, 10),
        note="GIF that is also valid JavaScript (GIF89a/*...*/=alert(1);)",
    )

    # --- WebP ---
    add("webp_lossless", WEBP_LOSSLESS_16x8, "webp", None, size=(16, 8))
    add("webp_lossy", WEBP_LOSSY_16x8, "webp", None, size=(16, 8))
    add(
        "webp_animated",
        WEBP_ANIMATED_8x8,
        "webp",
        None,
        size=(8, 8),
        note="2 frames; only the first is decoded",
    )
    add("webp_header_only", _webp_vp8x_only(16, 8), "webp", U, note="RIFF and VP8X chunk, no image")
    add("webp_truncated", WEBP_LOSSY_16x8[: len(WEBP_LOSSY_16x8) * 2 // 3], "webp", U)
    add("webp_riff_only", b"RIFF\x04\x00\x00\x00WEBP", "webp", U)
    add(
        "webp_canvas_16384x16384",
        _webp_set_canvas(WEBP_ANIMATED_8x8, 16384, 16384),
        "webp",
        T,
        bomb=True,
        note="animated WebP whose canvas claims 268 MP",
    )
    add(
        "webp_canvas_9000x9000",
        _webp_set_canvas(WEBP_ANIMATED_8x8, 9000, 9000),
        "webp",
        T,
        bomb=True,
        note="81 MP canvas: libwebp would allocate two canvases before any pixel check",
    )
    add(
        "webp_vp8l_claims_16384x16384",
        _webp_vp8l_size(WEBP_LOSSLESS_16x8, 16384, 16384),
        "webp",
        T,
        bomb=True,
    )

    # --- BMP ---
    B = _bmp(48, 32)
    add("bmp_valid", B, "bmp", None, size=(48, 32))
    add("bmp_top_down", _bmp(48, 32, top_down=True), "bmp", None, size=(48, 32), note="negative height")
    add("bmp_10000x2", _bmp(10000, 2), "bmp", None, size=(10000, 2))
    add("bmp_header_only", B[:54], "bmp", U, note="file and info headers, no pixels")
    add("bmp_truncated", B[: len(B) // 2], "bmp", U)
    add("bmp_claims_30000x30000", _bmp(30000, 30000, pixels=b"\0" * 64), "bmp", T, bomb=True)

    # --- TIFF ---
    rgb = _rgb_rows(48, 32, filt=False)
    add("tiff_valid", _tiff(48, 32, rgb), "tif", None, size=(48, 32))
    g16 = b"".join(struct.pack("<H", 4097 * (x % 16)) for _ in range(8) for x in range(16))
    add("tiff_16bit_gray", _tiff(16, 8, g16, samples=1, bits=16, photometric=1), "tif", None, size=(16, 8))
    cmyk = bytes(v for _ in range(16 * 8) for v in (0, 255, 255, 0))
    add("tiff_cmyk", _tiff(16, 8, cmyk, samples=4, photometric=5), "tif", None, size=(16, 8))
    f32 = b"".join(struct.pack("<f", x / 15.0) for _ in range(8) for x in range(16))
    add(
        "tiff_float32",
        _tiff(16, 8, f32, samples=1, bits=32, photometric=1, sample_format=3),
        "tif",
        None,
        size=(16, 8),
    )
    nanf = b"".join(struct.pack("<f", v) for v in [float("nan"), float("inf"), -float("inf"), 1.0] * 32)
    add(
        "tiff_float32_nan_inf",
        _tiff(16, 8, nanf, samples=1, bits=32, photometric=1, sample_format=3),
        "tif",
        None,
        size=(16, 8),
        note="NaN and infinities in a float image",
    )
    add("tiff_orientation_6", _tiff(48, 32, rgb, orientation=6), "tif", None, size=(32, 48))
    add(
        "tiff_ifd_loop",
        _tiff(48, 32, rgb, loop_ifd=True),
        "tif",
        None,
        size=(48, 32),
        note="IFD points to itself",
    )
    Tf = _tiff(48, 32, rgb)
    add("tiff_header_only", Tf[: len(Tf) - len(rgb)], "tif", U, note="IFD whose strip lies past the end")
    add("tiff_truncated", Tf[: len(Tf) - len(rgb) // 2], "tif", U)
    add(
        "tiff_claims_100000x100000",
        _tiff(100000, 100000, b"\0" * 64, strip_bytes=30_000_000_000 % (1 << 32)),
        "tif",
        T,
        bomb=True,
    )
    tiles = []
    for ty in range(2):
        for tx in range(3):
            tiles.append(
                bytes(
                    c
                    for y in range(16)
                    for x in range(16)
                    for c in quadrant_color(tx * 16 + x, ty * 16 + y, 48, 32)
                )
            )
    add("tiff_tiled", _tiff(48, 32, b"", tile=(16, 16), tiles=tiles), "tif", None, size=(48, 32))
    add(
        "tiff_small_image_big_tile",
        _tiff(10, 10, b"", tile=(256, 256), tiles=[_zlib_zeros(256 * 256 * 3)], compression=8),
        "tif",
        None,
        size=(10, 10),
        note="10x10 image stored in one deflated 256x256 tile, as GDAL and others write small images",
    )
    add(
        "tiff_tile_bomb",
        _tiff(16, 16, b"", tile=(16384, 16384), tiles=[_zlib_zeros(1000)], compression=8),
        "tif",
        T,
        bomb=True,
        note="16x16 image declaring one 16384x16384 tile: libtiff would allocate 768 MB for it",
    )
    add(
        "tiff_strip_offset_beyond_file",
        _tiff(48, 32, rgb, strip_offset=0x7FFFFFF0),
        "tif",
        U,
    )

    # --- formats refused on purpose ---
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>\n'
    add("svg_renamed_jpg", svg, "jpg", S)
    add(
        "svg_bom_xml_renamed_png",
        b'\xef\xbb\xbf<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE svg>\n' + svg,
        "png",
        S,
    )
    pdf = b"%PDF-1.4\n1 0 obj <</Type /Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n"
    add("pdf_renamed_jpg", pdf, "jpg", S)
    add("pdf_after_junk_renamed_jpg", b"\0" * 100 + pdf, "jpg", S, note="PDF readers accept junk before %PDF")
    add("eps_renamed_png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "png", S)
    add(
        "heic_renamed_jpg",
        struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0" + b"mif1heic",
        "jpg",
        _heif_expectation(),
        env_dependent=True,
        note="HEIF container header only (iPhone photos): unsupported without a HEIF plugin",
    )
    add(
        "psd_renamed_png",
        b"8BPS\x00\x01" + b"\0" * 6 + struct.pack(">HIIHH", 3, 8, 16, 8, 3) + b"\0" * 64,
        "png",
        S,
    )

    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


IMAGE_CASES: list[HostileCase] = build_image_cases()


def case_by_name(name: str) -> HostileCase:
    """The case called ``name`` (KeyError if there is none)."""
    for case in IMAGE_CASES:
        if case.name == name:
            return case
    raise KeyError(name)


def valid_cases() -> list[HostileCase]:
    return [c for c in IMAGE_CASES if c.expect is None]


def error_cases() -> list[HostileCase]:
    return [c for c in IMAGE_CASES if c.expect is not None]


def bomb_cases() -> list[HostileCase]:
    return [c for c in IMAGE_CASES if c.bomb]


def select(predicate: Callable[[HostileCase], bool]) -> list[HostileCase]:
    return [c for c in IMAGE_CASES if predicate(c)]


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------

HOSTILE_QUERIES: list[HostileQuery] = [
    HostileQuery("none", None, None),
    HostileQuery("plain", "a dog on a skateboard", None),
    HostileQuery("empty", "", QueryError),
    HostileQuery("spaces", "     ", QueryError),
    HostileQuery("whitespace_mix", " \t\r\n \u3000\u2028 ", QueryError),
    HostileQuery("zero_width_only", "\u200b\u200b\ufeff", QueryError),
    HostileQuery("long_100kb", "a dog " * (100 * 1024 // 6), QueryError),
    HostileQuery("exactly_512", "x" * 512, None),
    HostileQuery("513_chars", "x" * 513, QueryError),
    HostileQuery("512_after_strip", "   " + "y" * 512 + "\n\n", None),
    HostileQuery("stopwords_only", "the of and", None),
    HostileQuery("emoji", "\U0001f415 on a \U0001f6f9", None),
    HostileQuery("emoji_zwj_family", "\U0001f468\u200d\U0001f469\u200d\U0001f467", None),
    HostileQuery(
        "arabic_rtl", "\u0642\u0637\u0629 \u0639\u0644\u0649 \u0627\u0644\u0623\u0631\u064a\u0643\u0629", None
    ),
    HostileQuery("hebrew_rtl", "\u05d7\u05ea\u05d5\u05dc \u05e2\u05dc \u05d4\u05e1\u05e4\u05d4", None),
    HostileQuery("bidi_override", "cat \u202egod\u202c", None),
    HostileQuery("cjk", "\u732b\u3068\u72ac", None),
    HostileQuery("combining_marks", "Z\u0351\u036b\u0343a\u0352\u036cl\u036a\u0351g\u0350o", None),
    HostileQuery("tabs_newlines", "a\tdog\r\non\nthe beach", None),
    HostileQuery("nul_byte", "cat\x00dog", QueryError),
    HostileQuery("only_nul", "\x00", QueryError),
    HostileQuery("bell_c0", "cat\x07", QueryError),
    HostileQuery("ansi_escape", "\x1b[31mred\x1b[0m car", QueryError),
    HostileQuery("vertical_tab", "a\x0bdog", QueryError),
    HostileQuery("delete", "dog\x7f", QueryError),
    HostileQuery("c1_csi", "dog\x9b31m", QueryError),
    HostileQuery("c1_nel", "dog\x85cat", QueryError),
    HostileQuery("lone_surrogate", "dog\ud800", QueryError),
    HostileQuery("bytes_not_str", b"a dog", QueryError),
    HostileQuery("int_not_str", 42, QueryError),
    HostileQuery("html_injection", "<script>alert(1)</script>", None),
    HostileQuery("sql_injection", "'; DROP TABLE crops; --", None),
    HostileQuery("format_string", "{0.__class__} %s %n", None),
]
