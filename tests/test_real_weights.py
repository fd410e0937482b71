"""Slow tests against real OWL-ViT weights: run with CLIPCROP_TEST_WEIGHTS=/path/to/owlvit-base-patch32.

Skipped where no weights exist (CI, these machines). ``pytest -m slow`` selects them.
"""

from __future__ import annotations

import os

import pytest
from conftest import sample_photo

WEIGHTS = os.environ.get("CLIPCROP_TEST_WEIGHTS")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not WEIGHTS or not os.path.isdir(WEIGHTS), reason="set CLIPCROP_TEST_WEIGHTS to an OWL-ViT folder"
    ),
]


def test_real_owlvit_finds_the_astronaut_face():
    from clipcrop import ClipCrop

    cc = ClipCrop.from_pretrained(WEIGHTS)
    assert cc.mode == "training-free"
    result = cc.crop(sample_photo("astronaut.png"), query="a flag", top_k=3)
    # the US flag is in the top-left quarter of the astronaut photo
    x0, y0, x1, y1 = result.union_box
    assert (x0 + x1) / 2 < 256 and (y0 + y1) / 2 < 300
    assert len(result) == 3


def test_real_owlvit_two_queries_differ():
    from clipcrop import ClipCrop

    cc = ClipCrop.from_pretrained(WEIGHTS)
    enc = cc.encode(sample_photo("coffee.png"))
    a = enc.crop(query="a coffee cup").union_box
    b = enc.crop(query="a spoon").union_box
    assert a != b
