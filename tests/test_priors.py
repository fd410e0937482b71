"""Priors (keep / avoid regions, faces): hand-computed penalties and the real face detector."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sample_photo
from PIL import Image

from clipcrop.crop_options import Prior, parse_box
from clipcrop.errors import ParameterError
from clipcrop.modeling.priors import clip_priors, keeps_all, prior_penalties

CROPS = np.array([[0, 0, 30, 30], [15, 0, 40, 40], [0, 0, 100, 100], [70, 70, 100, 100]], dtype=float)


def test_keep_penalty_is_the_weight_unless_the_region_is_whole():
    keep = Prior((10.0, 10.0, 20.0, 20.0), "keep", 2.0)
    assert prior_penalties(CROPS, [keep]).tolist() == [0.0, 2.0, 0.0, 2.0]  # cut, then left out
    assert keeps_all(CROPS, [keep]).tolist() == [True, False, True, False]


def test_avoid_penalty_grows_with_the_share_inside():
    avoid = Prior((20.0, 20.0, 40.0, 40.0), "avoid")
    # shares inside: 0.25, 1.0, 1.0, 0.0 -> 0.5 + 0.5 * share when touched
    assert prior_penalties(CROPS, [avoid]).tolist() == pytest.approx([0.625, 1.0, 1.0, 0.0])
    assert keeps_all(CROPS, [avoid]).all()  # avoid regions are not kept regions


def test_parse_box_and_bad_priors():
    assert parse_box("1,2,30,40", "keep") == Prior((1.0, 2.0, 30.0, 40.0), "keep", 1.0)
    assert parse_box(" 1, 2 ,30,40, 0.5", "avoid").weight == 0.5
    for bad in ("1,2,3", "1,2,3,4,5,6", "a,b,c,d", "10,10,5,20", "1,2,30,40,0", "1,2,30,40,-1"):
        with pytest.raises(ParameterError):
            parse_box(bad, "keep")
    with pytest.raises(ParameterError):
        Prior((0.0, 0.0, 1.0, 1.0), "boost")


def test_clip_priors_to_the_image():
    inside = Prior((-10.0, 5.0, 50.0, 60.0), "keep")
    outside = Prior((200.0, 200.0, 300.0, 300.0), "avoid")
    assert clip_priors([inside, outside], 100, 100) == [Prior((0.0, 5.0, 50.0, 60.0), "keep")]


@pytest.mark.parametrize(
    ("photo", "face"),
    [("astronaut.png", (175, 60, 280, 170)), ("grace_hopper.jpg", (150, 100, 380, 330))],
)
def test_haar_cascade_finds_the_face(photo, face):
    from clipcrop.modeling.faces import detect_faces

    found = detect_faces(Image.open(sample_photo(photo)).convert("RGB"))
    assert found, photo
    x0, y0, x1, y1 = found[0]
    # the detection lies inside the face region written down by hand, and covers most of it
    assert face[0] <= x0 and face[1] <= y0 and x1 <= face[2] and y1 <= face[3]
    assert (x1 - x0) * (y1 - y0) >= 0.5 * (face[2] - face[0]) * (face[3] - face[1])
    assert detect_faces(Image.open(sample_photo("chelsea.png")).convert("RGB")) == []  # a cat
