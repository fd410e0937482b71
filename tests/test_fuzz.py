"""Bounded, deterministic fuzzing for CI: mutate the hostile corpus (bit flips, truncations,
insertions, deletions, interesting integers, splices) and check that decoding raises nothing but
documented ClipCrop errors; fuzz query validation with arbitrary text.

For long coverage-guided runs use ``tests/fuzz_load.py`` (atheris).
"""

from __future__ import annotations

import struct

from hostile import IMAGE_CASES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipcrop.errors import ClipCropError
from clipcrop.io.images import decode_bytes
from clipcrop.limits import Limits
from clipcrop.validation import validate_query

# Small limits keep every example cheap (a mutated header may claim a "valid" 4 MP image).
LIMITS = Limits(max_pixels=4_000_000, decode_max_side=512)

# Small seeds only: mutating 80 kB images costs time and finds nothing the small ones do not.
SEEDS = [case.data for case in IMAGE_CASES if 0 < len(case.data) <= 8192]

_INTERESTING = [
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
]

FUZZ_SETTINGS = settings(
    max_examples=4000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "integer", "splice", "byte"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "integer":
            fmt = draw(st.sampled_from([">H", "<H", ">I", "<I"]))
            value = draw(st.sampled_from(_INTERESTING)) & (0xFFFF if fmt[1] == "H" else 0xFFFFFFFF)
            data[pos : pos + struct.calcsize(fmt)] = struct.pack(fmt, value)
        elif op == "splice":
            other = draw(st.sampled_from(SEEDS))
            cut = draw(st.integers(0, len(other)))
            data[pos:] = other[cut:]
    return bytes(data)


@FUZZ_SETTINGS
@given(mutated_images())
def test_mutated_images_raise_only_documented_errors(data):
    try:
        loaded = decode_bytes(data, LIMITS, name="<fuzz>")
    except ClipCropError:
        return
    assert loaded.image.mode == "RGB"
    assert loaded.width * loaded.height <= LIMITS.max_pixels
    assert max(loaded.image.size) <= 2 * LIMITS.decode_max_side or min(loaded.image.size) == 1


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_documented_errors(data):
    try:
        decode_bytes(data, LIMITS, name="<fuzz>")
    except ClipCropError:
        pass


_texts = st.one_of(
    st.text(max_size=600),
    st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x2FFF), max_size=600),
    st.binary(max_size=600).map(lambda b: b.decode("utf-8", errors="surrogateescape")),
)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(_texts)
def test_queries_raise_only_query_errors(text):
    try:
        out = validate_query(text, LIMITS)
    except ClipCropError:
        return
    assert out == out.strip() and "  " not in out and len(out) <= LIMITS.max_query_chars
    assert validate_query(out, LIMITS) == out
