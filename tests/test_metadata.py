"""Crops keep the source's ICC profile and EXIF (orientation reset to 1), in JPEG, PNG and WebP, on
every surface that writes pictures; ``--strip-metadata`` / ``strip_metadata`` drop the EXIF and keep
the profile, ``--strip-icc`` / ``strip_icc`` drop the profile."""

from __future__ import annotations

import io

import pytest
from conftest import sample_photo
from PIL import ExifTags, Image, ImageCms

from clipcrop.io.images import load_image
from clipcrop.io.metadata import crop_exif, output_metadata, rgb_icc_profile
from clipcrop.limits import Limits

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
TAGS = {0x010F: "Canon", 0x013B: "Ann Example", 0x8298: "(c) 2024 Ann Example"}  # Make, Artist, Copyright
STORED = (240, 160)  # pixels as stored; Orientation 6 (rotate 90 CW to view) makes them 160 x 240 upright
FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}


def source_exif(orientation: int = 6) -> Image.Exif:
    exif = Image.Exif()
    for tag, value in TAGS.items():
        exif[tag] = value
    exif[ExifTags.Base.Orientation] = orientation
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.ExifImageWidth], sub[ExifTags.Base.ExifImageHeight] = STORED
    sub[ExifTags.Base.DateTimeOriginal] = "2024:05:01 10:00:00"
    return exif


def tagged_photo(fmt: str, size: tuple[int, int] = STORED) -> bytes:
    """A real photo with an sRGB profile and EXIF (Make, Artist, Copyright, Orientation 6)."""
    img = Image.open(sample_photo("chelsea.png")).convert("RGB").resize(size)
    buf = io.BytesIO()
    kwargs = {"quality": 95} if fmt != "png" else {}
    img.save(buf, FORMATS[fmt], icc_profile=SRGB, exif=source_exif(), **kwargs)
    return buf.getvalue()


def assert_carried(picture: Image.Image, *, exif: bool = True, icc: bool = True) -> None:
    """The picture's profile is the source's byte for byte; its tags are the source's, upright."""
    assert picture.info.get("icc_profile") == (SRGB if icc else None)
    tags = picture.getexif()
    if not exif:
        assert "exif" not in picture.info and dict(tags) == {}
        return
    assert {t: tags.get(t) for t in TAGS} == TAGS
    assert tags.get(ExifTags.Base.Orientation) == 1
    sub = tags.get_ifd(ExifTags.IFD.Exif)
    assert sub[ExifTags.Base.DateTimeOriginal] == "2024:05:01 10:00:00"
    assert (sub[ExifTags.Base.ExifImageWidth], sub[ExifTags.Base.ExifImageHeight]) == picture.size


# ---------------------------------------------------------------------------------- the pieces
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_loader_carries_profile_and_exif(fmt):
    loaded = load_image(tagged_photo(fmt))
    assert (loaded.width, loaded.height) == (160, 240) and loaded.image.size == (160, 240)
    assert loaded.icc_profile == SRGB
    assert Image.Exif().load(loaded.exif) is None and crop_exif(loaded.exif, (1, 1)) is not None


def test_jpeg_reduced_while_decoding_still_carries_them():
    loaded = load_image(tagged_photo("jpg", size=(1200, 800)), Limits(decode_max_side=256))
    assert loaded.image.width < loaded.width  # JPEG draft did reduce it
    assert loaded.icc_profile == SRGB and loaded.exif


def test_output_metadata_rules():
    raw = source_exif().tobytes()
    meta = output_metadata(SRGB, raw, (50, 70))
    assert meta.icc_profile == SRGB
    tags = Image.Exif()
    tags.load(meta.exif)
    assert tags[ExifTags.Base.Orientation] == 1 and tags[0x8298] == TAGS[0x8298]
    sub = tags.get_ifd(ExifTags.IFD.Exif)
    assert (sub[ExifTags.Base.ExifImageWidth], sub[ExifTags.Base.ExifImageHeight]) == (50, 70)
    assert output_metadata(SRGB, raw, (5, 5), strip_metadata=True) == type(meta)(icc_profile=SRGB)
    assert output_metadata(SRGB, raw, (5, 5), strip_icc=True).icc_profile is None
    assert output_metadata(None, b"Exif\x00\x00garbage", (5, 5)).save_kwargs() == {}  # unreadable: left out


def test_only_wellformed_rgb_profiles_are_written():
    assert rgb_icc_profile(SRGB) == SRGB
    gray = bytearray(SRGB)
    gray[16:20] = b"GRAY"  # a grey (or CMYK) profile would describe the wrong colours for RGB pixels
    assert rgb_icc_profile(bytes(gray)) is None
    assert rgb_icc_profile(b"\x00" * 200) is None  # no acsp signature
    assert rgb_icc_profile(SRGB[:100]) is None
    assert rgb_icc_profile(SRGB + b"trailing junk") == SRGB  # cut to the declared size


def _exif_with_thumbnail() -> bytes:
    """A big-endian TIFF block: IFD0 (Make) linked to IFD1, which holds a JPEG thumbnail."""
    import struct

    thumb = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(thumb, "JPEG")
    thumb_bytes = thumb.getvalue()
    make = b"Canon\x00"
    # header (8) + IFD0: count(2) + 1 entry(12) + next(4) = 26 -> IFD1 at 26
    ifd1 = 26 + len(make)
    data_at = ifd1 + 2 + 2 * 12 + 4
    out = b"MM\x00*" + struct.pack(">I", 8)
    out += struct.pack(">H", 1) + struct.pack(">HHII", 0x010F, 2, len(make), 26) + struct.pack(">I", ifd1)
    out += make
    out += struct.pack(">H", 2)
    out += struct.pack(">HHII", 0x0201, 4, 1, data_at) + struct.pack(">HHII", 0x0202, 4, 1, len(thumb_bytes))
    out += struct.pack(">I", 0) + thumb_bytes
    return b"Exif\x00\x00" + out


def test_thumbnail_of_the_uncropped_photo_is_dropped():
    raw = _exif_with_thumbnail()
    before = Image.Exif()
    before.load(raw)
    assert before[0x010F] == "Canon" and before.get_ifd(ExifTags.IFD.IFD1)  # the thumbnail is there
    after = Image.Exif()
    after.load(crop_exif(raw, (10, 10)))
    assert after[0x010F] == "Canon" and not after.get_ifd(ExifTags.IFD.IFD1)


# ---------------------------------------------------------------------------------- the surfaces
@pytest.mark.parametrize(
    "src_fmt,out_fmt", [("jpg", "jpeg"), ("png", "png"), ("webp", "webp"), ("png", "jpeg")]
)
def test_service_crop_image_keeps_profile_and_exif(tiny_cc, src_fmt, out_fmt):
    from fastapi.testclient import TestClient

    from clipcrop.serve.app import create_app

    with TestClient(create_app(tiny_cc, Limits())) as client:

        def crop(**fields) -> Image.Image:
            r = client.post(
                "/v1/crop/image",
                files={"image": (f"photo.{src_fmt}", tagged_photo(src_fmt))},
                data={"format": out_fmt, "top_k": "1", **fields},
            )
            assert r.status_code == 200, r.text
            picture = Image.open(io.BytesIO(r.content))
            assert picture.format == FORMATS["jpg" if out_fmt == "jpeg" else out_fmt]
            x0, y0, x1, y1 = map(int, r.headers["x-crop-box"].split(","))
            assert picture.size == (x1 - x0, y1 - y0)
            return picture

        assert_carried(crop())
        assert_carried(crop(strip_metadata="true"), exif=False)
        assert_carried(crop(strip_icc="true"), icc=False)
        assert_carried(crop(strip_metadata="true", strip_icc="true"), exif=False, icc=False)
