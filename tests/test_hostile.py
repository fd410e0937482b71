"""Hostile inputs: every corpus image raises exactly its documented error or loads correctly,
bombs are refused with bounded memory, EXIF orientation moves pixels where the EXIF spec says,
big JPEGs are reduced while decoding, and queries / top_k are validated.

Memory is measured two ways: ``tracemalloc`` (Python and numpy allocations) and, on Linux, the
growth of the process's peak resident memory after resetting it (``/proc/self/clear_refs``),
because Pillow and libjpeg/libtiff/libwebp allocate with plain ``malloc`` that tracemalloc does
not see.  No test asserts on wall time.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hostile import (
    HOSTILE_QUERIES,
    IMAGE_CASES,
    JPEG_RGB_48x32,
    _app1_exif,
    _exif_orientation,
    _jpeg_insert,
    bomb_cases,
    case_by_name,
    quadrant_color,
)
from PIL import Image

from clipcrop.errors import (
    ClipCropError,
    FileTooLargeError,
    ImageTooLargeError,
    ParameterError,
    QueryError,
    UnreadableImageError,
    UnsupportedFormatError,
)
from clipcrop.io.images import decode_bytes, load_image
from clipcrop.limits import DEFAULT_LIMITS, Limits
from clipcrop.validation import validate_query, validate_query_pair, validate_top_k

MB = 1024 * 1024
ids = lambda case: case.name  # noqa: E731


# ---------------------------------------------------------------------------------------------
# memory measurement
# ---------------------------------------------------------------------------------------------


def _vm_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS
        return True
    except OSError:
        return False


def measure(fn: Callable[[], object]) -> tuple[int, int | None]:
    """Run ``fn``; return (tracemalloc peak bytes, peak RSS growth bytes or None if unmeasurable)."""
    rss_ok = sys.platform.startswith("linux") and _reset_peak_rss()
    before = _vm_kb("VmRSS") if rss_ok else 0
    tracemalloc.start()
    try:
        fn()
    finally:
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    growth = (_vm_kb("VmHWM") - before) * 1024 if rss_ok else None
    return traced_peak, growth


# ---------------------------------------------------------------------------------------------
# the image corpus
# ---------------------------------------------------------------------------------------------


def test_corpus_is_big_enough_and_covers_every_format():
    assert len(IMAGE_CASES) >= 40
    exts = {c.filename.rsplit(".", 1)[1] for c in IMAGE_CASES}
    assert {"jpg", "png", "webp", "gif", "bmp", "tif"} <= exts
    for prefix in ("jpeg", "png", "webp", "gif", "bmp", "tiff"):
        kinds = {c.name for c in IMAGE_CASES if c.name.startswith(prefix + "_")}
        assert any("truncated" in k for k in kinds), prefix
        assert any("header_only" in k for k in kinds), prefix
    assert len(bomb_cases()) >= 8


@pytest.mark.parametrize("case", IMAGE_CASES, ids=ids)
def test_image_case(case):
    if case.expect is None:
        loaded = load_image(case.data, name=case.filename)
        assert (loaded.width, loaded.height) == case.size
        img = loaded.image
        assert img.mode == "RGB"
        assert max(img.size) <= 2 * DEFAULT_LIMITS.decode_max_side
        assert img.width <= loaded.width and img.height <= loaded.height
        if loaded.width != loaded.height and img.width != img.height:
            assert (img.width > img.height) == (loaded.width > loaded.height), "decoded image not upright"
    else:
        with pytest.raises(ClipCropError) as info:
            load_image(case.data, name=case.filename)
        assert type(info.value) is case.expect, f"{type(info.value).__name__}: {info.value}"
        message = str(info.value)
        assert message.startswith(case.filename + ": ")
        assert "\n" not in message and len(message) < 400  # one error line for the CLI


@pytest.mark.parametrize("case", bomb_cases(), ids=ids)
def test_bomb_is_refused_with_bounded_memory(case):
    def run():
        with pytest.raises(case.expect):
            decode_bytes(case.data, name=case.filename)

    traced, rss = measure(run)
    assert traced < 64 * MB
    if rss is not None:
        assert rss < 64 * MB, f"resident memory grew by {rss / MB:.0f} MB"


def test_corpus_files_load_like_bytes(tmp_path):
    """The same cases through the path and stream code paths give the same outcome."""
    for case in IMAGE_CASES:
        path = tmp_path / case.filename
        path.write_bytes(case.data)
        for source in (path, str(path), io.BytesIO(case.data)):
            try:
                loaded = load_image(source, name=case.filename)
                outcome: object = (loaded.width, loaded.height)
            except ClipCropError as exc:
                outcome = type(exc)
            assert outcome == (case.expect or case.size), (case.name, source)


def test_committed_corpus_matches_builder():
    from make_hostile_corpus import CORPUS_DIR, differences

    diff = differences()
    assert not diff, (
        "tests/data/hostile is out of date; run python tests/make_hostile_corpus.py\n" + "\n".join(diff[:20])
    )
    assert sum(p.stat().st_size for p in CORPUS_DIR.iterdir()) < 2 * MB


# ---------------------------------------------------------------------------------------------
# limits and other sources
# ---------------------------------------------------------------------------------------------


def test_file_size_limit_for_bytes_path_and_stream(tmp_path):
    data = case_by_name("png_valid").data
    small = Limits(max_file_bytes=len(data) - 1)
    path = tmp_path / "x.png"
    path.write_bytes(data)
    for source in (data, path, io.BytesIO(data)):
        with pytest.raises(FileTooLargeError, match="max_file_bytes"):
            load_image(source, small)
    with pytest.raises(FileTooLargeError):
        decode_bytes(data, small)
    assert load_image(data, Limits(max_file_bytes=len(data))).width == 48


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_device_is_read_bounded():
    """Run in a child limited to 1 GiB of address space: a regression must not exhaust the host."""
    resource = pytest.importorskip("resource")
    code = (
        "from clipcrop.io.images import read_bytes_limited\n"
        "from clipcrop.errors import FileTooLargeError\n"
        "from clipcrop.limits import Limits\n"
        "try:\n"
        "    read_bytes_limited('/dev/zero', Limits(max_file_bytes=1000))\n"
        "except FileTooLargeError:\n"
        "    print('refused')\n"
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=limit, timeout=120
    )
    assert done.stdout.strip() == "refused", done.stderr[-500:]


def test_bad_paths(tmp_path):
    with pytest.raises(UnreadableImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(UnreadableImageError, match="folder"):
        load_image(tmp_path)
    with pytest.raises(UnreadableImageError):
        load_image("bad\x00name.jpg")


def test_pixel_limit_and_allowed_formats():
    png = case_by_name("png_valid").data
    with pytest.raises(ImageTooLargeError, match="max_pixels"):
        load_image(png, Limits(max_pixels=48 * 32 - 1))
    assert load_image(png, Limits(max_pixels=48 * 32)).width == 48
    with pytest.raises(UnsupportedFormatError, match="PNG"):
        load_image(png, Limits(allowed_formats=("JPEG",)))
    # a format name Pillow does not know (no plugin) must not break the others
    assert load_image(png, Limits(allowed_formats=("HEIF", "NOSUCHFORMAT", "PNG"))).width == 48


def test_webp_canvas_checked_before_decoder_is_built():
    data = case_by_name("webp_canvas_9000x9000").data
    with pytest.raises(ImageTooLargeError, match="9000x9000"):
        decode_bytes(data)
    # the same file passes the pixel check when the limit allows it (and then libwebp decodes it)
    loaded = decode_bytes(case_by_name("webp_animated").data, Limits(max_pixels=64))
    assert (loaded.width, loaded.height) == (8, 8)


def test_numpy_and_pil_sources():
    arr = np.zeros((5, 7, 3), np.float32)
    assert load_image(arr).image.size == (7, 5)
    with pytest.raises(UnreadableImageError):
        load_image(np.zeros((5, 7, 2), np.uint8))
    with pytest.raises(ImageTooLargeError):
        load_image(np.zeros((5, 7), np.uint8), Limits(max_pixels=34))
    tif = Image.open(io.BytesIO(case_by_name("tiff_orientation_6").data))
    loaded = load_image(tif)  # Pillow applies TIFF orientation itself: must not be applied twice
    assert (loaded.width, loaded.height) == (32, 48) == loaded.image.size


def test_error_names_stay_on_one_line():
    """Upload names come from clients: a newline in one must not break the CLI's one error line."""
    for case in (
        case_by_name("png_truncated_in_idat"),
        case_by_name("svg_renamed_jpg"),
        case_by_name("empty"),
    ):
        with pytest.raises(case.expect) as info:
            decode_bytes(case.data, name="evil\nname\r\x1b[31m.png" + "x" * 1000)
        message = str(info.value)
        assert not re.search("[\x00-\x1f\x7f-\x9f]", message) and len(message) < 500


def test_text_mode_stream_is_a_type_error():
    with pytest.raises(TypeError, match="binary"):
        load_image(io.StringIO("not bytes"))


# ---------------------------------------------------------------------------------------------
# EXIF orientation moves pixels as the EXIF/TIFF specification says
# ---------------------------------------------------------------------------------------------


def display_position(orientation: int, x: int, y: int, w: int, h: int) -> tuple[int, int]:
    """Where stored pixel (x, y) of a w x h image is shown, from the TIFF 6.0 definition of
    Orientation ("the 0th row represents the visual <side>, the 0th column the visual <side>")."""
    return {
        1: (x, y),  # top, left
        2: (w - 1 - x, y),  # top, right
        3: (w - 1 - x, h - 1 - y),  # bottom, right
        4: (x, h - 1 - y),  # bottom, left
        5: (y, x),  # left, top
        6: (h - 1 - y, x),  # right, top
        7: (h - 1 - y, w - 1 - x),  # right, bottom
        8: (y, w - 1 - x),  # left, bottom
    }[orientation]


# where the stored top-left pixel ends up, spelled out
CORNER = {1: "TL", 2: "TR", 3: "BR", 4: "BL", 5: "TL", 6: "TR", 7: "BR", 8: "BL"}


def _encode(stored: np.ndarray, fmt: str, orientation: int) -> bytes:
    img = Image.fromarray(stored)
    buf = io.BytesIO()
    if fmt == "TIFF":
        img.save(buf, "TIFF", tiffinfo={274: orientation})
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(buf, fmt, exif=exif.tobytes(), **({"lossless": True} if fmt == "WEBP" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_pixel_exact(fmt, orientation):
    h, w = 3, 5
    stored = np.random.default_rng(orientation).integers(0, 256, (h, w, 3), dtype=np.uint8)
    stored[0, 0] = (255, 0, 0)
    loaded = load_image(_encode(stored, fmt, orientation))
    shown = np.asarray(loaded.image)
    transposed = orientation >= 5
    assert (loaded.width, loaded.height) == ((h, w) if transposed else (w, h))
    assert shown.shape[:2] == ((w, h) if transposed else (h, w))
    expected = np.zeros_like(shown)
    for y in range(h):
        for x in range(w):
            dx, dy = display_position(orientation, x, y, w, h)
            expected[dy, dx] = stored[y, x]
    np.testing.assert_array_equal(shown, expected)
    corners = {"TL": shown[0, 0], "TR": shown[0, -1], "BL": shown[-1, 0], "BR": shown[-1, -1]}
    assert tuple(corners[CORNER[orientation]]) == (255, 0, 0)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg_quadrants(orientation):
    """Lossy JPEG: compare the colour at the centre of each stored quadrant after rotation."""
    w, h = 48, 32
    loaded = load_image(_jpeg_insert(JPEG_RGB_48x32, _app1_exif(_exif_orientation(orientation))))
    shown = np.asarray(loaded.image).astype(int)
    for qx, qy in ((w // 4, h // 4), (3 * w // 4, h // 4), (w // 4, 3 * h // 4), (3 * w // 4, 3 * h // 4)):
        dx, dy = display_position(orientation, qx, qy, w, h)
        want = np.array(quadrant_color(qx, qy, w, h))
        assert np.abs(shown[dy, dx] - want).max() < 40, (orientation, (qx, qy))


# ---------------------------------------------------------------------------------------------
# a big photo is reduced while decoding
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jpeg_40mp() -> bytes:
    w, h = 8000, 5000
    img = Image.linear_gradient("L").resize((w // 8, h // 8)).convert("RGB").resize((w, h), Image.NEAREST)
    img.paste((255, 0, 0), (0, 0, w // 10, h // 10))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=75)
    del img
    return buf.getvalue()


def test_big_jpeg_is_reduced_while_decoding(jpeg_40mp):
    result = {}
    traced, rss = measure(lambda: result.setdefault("loaded", load_image(jpeg_40mp)))
    loaded = result["loaded"]
    assert (loaded.width, loaded.height) == (8000, 5000)
    assert max(loaded.image.size) <= 2 * DEFAULT_LIMITS.decode_max_side
    assert loaded.scale <= 0.5
    assert tuple(loaded.image.getpixel((5, 5))) == pytest.approx((255, 0, 0), abs=30)
    full_decode = 8000 * 5000 * 3
    assert traced < full_decode / 10
    if rss is not None:
        assert rss < full_decode / 2, f"resident memory grew by {rss / MB:.0f} MB"


def test_big_jpeg_with_orientation_reports_upright_size(jpeg_40mp):
    loaded = load_image(_jpeg_insert(jpeg_40mp, _app1_exif(_exif_orientation(6))))
    assert (loaded.width, loaded.height) == (5000, 8000)
    assert loaded.image.height > loaded.image.width
    assert max(loaded.image.size) <= 2 * DEFAULT_LIMITS.decode_max_side
    # the red block was at the stored top-left: orientation 6 shows it at the top-right
    assert tuple(loaded.image.getpixel((loaded.image.width - 5, 5))) == pytest.approx((255, 0, 0), abs=30)


def test_full_resolution_when_not_reducing():
    loaded = load_image(case_by_name("png_10000x2").data, reduce=False)
    assert loaded.image.size == (10000, 2) and loaded.scale == 1.0


# ---------------------------------------------------------------------------------------------
# queries and parameters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,query,expect", HOSTILE_QUERIES, ids=[q.name for q in HOSTILE_QUERIES])
def test_hostile_query(name, query, expect):
    if expect is None:
        text = validate_query(query, DEFAULT_LIMITS)
        if query is None:
            assert text is None
            return
        assert text == text.strip() and "  " not in text and len(text) <= DEFAULT_LIMITS.max_query_chars
        assert not re.search(r"[\t\r\n]", text)
        assert validate_query(text, DEFAULT_LIMITS) == text  # idempotent
    else:
        with pytest.raises(ClipCropError) as info:
            validate_query(query, DEFAULT_LIMITS)
        assert type(info.value) is expect
        message = str(info.value)
        assert not re.search("[\x00-\x1f\x7f-\x9f]", message), "control characters echoed back"
        assert len(message) < 300


def test_query_messages_say_what_is_wrong():
    with pytest.raises(QueryError, match="NUL"):
        validate_query("a\x00b", DEFAULT_LIMITS)
    with pytest.raises(QueryError, match="control character U\\+001B"):
        validate_query("\x1b[2J", DEFAULT_LIMITS)
    with pytest.raises(QueryError, match="empty"):
        validate_query(" \n\t ", DEFAULT_LIMITS)
    with pytest.raises(QueryError, match=r"above the limit of 10.*max_query_chars"):
        validate_query("x" * 11, Limits(max_query_chars=10))
    assert validate_query("  a \t\n  dog  ", DEFAULT_LIMITS) == "a dog"
    assert validate_query(" " + "x" * 10 + " ", Limits(max_query_chars=10)) == "x" * 10


def test_top_k():
    assert validate_top_k(3, 5) == 3
    assert validate_top_k(np.int64(5), 5) == 5 and type(validate_top_k(np.int64(5), 5)) is int
    for bad in (0, 6, -1, True, False, 2.0, "3", None, [3]):
        with pytest.raises(ParameterError):
            validate_top_k(bad, 5)
    with pytest.raises(ValueError):
        validate_top_k(1, 0)


def test_query_pair():
    validate_query_pair(None, None)
    validate_query_pair("a dog", None)
    validate_query_pair(None, b"image bytes")
    with pytest.raises(QueryError, match="not both"):
        validate_query_pair("a dog", b"image bytes")


def test_errors_map_to_4xx():
    for case in IMAGE_CASES:
        if case.expect is not None:
            assert 400 <= case.expect.http_status < 500 and case.expect.code
