"""CropOptions, the one check of a crop request (torch-free), and the results it shapes."""

from __future__ import annotations

import pytest
from conftest import sample_photo

from clipcrop.crop_options import CropOptions, Prior, parse_aspects, parse_size
from clipcrop.errors import ParameterError

HOPPER = sample_photo("grace_hopper.jpg")


def test_aspects_sizes_and_their_contradictions():
    assert parse_aspects(None) == ((None, None),)
    assert parse_aspects("1:1, 4:5,16:9") == (("1:1", 1.0), ("4:5", 0.8), ("16:9", 16 / 9))
    assert parse_aspects(["3:2"]) == (("3:2", 1.5),)
    assert parse_size("1080x1350") == (1080, 1350) and parse_size((64, 32)) == (64, 32)
    opts = CropOptions.build(size="1080x1350")
    assert opts.aspects == (("1080:1350", 0.8),)  # the aspect follows from the size
    assert CropOptions.build(size="1080x1350", aspect_ratio="4:5").aspects == (("4:5", 0.8),)
    for bad in (
        {"aspect_ratio": "1:1,1:1"},
        {"aspect_ratio": "1:1,0:3"},
        {"size": "1080"},
        {"size": "0x10"},
        {"size": "100x100", "aspect_ratio": "16:9"},
        {"size": "100x100", "aspect_ratio": "1:1,4:5"},
        {"keep": ["1,2,3"]},
        {"avoid_box": ["5,5,1,1"]},
        {"avoid": ["  "]},
        {"avoid": ["a\x00b"]},
        {"avoid": ["x" * 600]},
        {"avoid": [f"thing {i}" for i in range(9)]},
        {"keep": ["1,2,30,40"] * 33},
    ):
        with pytest.raises(ParameterError):
            CropOptions.build(**bad)


def test_output_size_never_upscales_unless_asked():
    opts = CropOptions.build(size="200x100")
    assert opts.output_size((0, 0, 400, 200)) == (200, 100)
    assert opts.output_size((0, 0, 100, 50)) == (100, 50)  # smaller crop: kept at its own size
    assert CropOptions.build(size="200x100", upscale=True).output_size((0, 0, 100, 50)) == (200, 100)
    assert CropOptions.build().output_size((0, 0, 10, 10)) is None


def test_boxes_and_texts_become_priors():
    opts = CropOptions.build(keep=["1,2,30,40,2"], avoid_box=["5,5,9,9"], avoid="a  logo", faces=True)
    assert opts.priors == (Prior((1.0, 2.0, 30.0, 40.0), "keep", 2.0), Prior((5.0, 5.0, 9.0, 9.0), "avoid"))
    assert opts.avoid_text == ("a logo",) and opts.faces


@pytest.mark.parametrize("fixture", ["tiny_cc", "tiny_free_cc"])
def test_several_ratios_one_backbone_pass_grouped_in_order(fixture, request, monkeypatch):
    cc = request.getfixturevalue(fixture)
    calls = []
    encode = cc.backbone.encode
    monkeypatch.setattr(cc.backbone, "encode", lambda *a, **k: calls.append(1) or encode(*a, **k))
    result = cc.crop(HOPPER, query="a woman", top_k=3, aspect_ratio="1:1,4:5,16:9")
    assert len(calls) == 1
    assert result.aspects == ["1:1", "4:5", "16:9"] and len(result) == 9
    assert [c.aspect for c in result] == ["1:1"] * 3 + ["4:5"] * 3 + ["16:9"] * 3
    for label, ratio in (("1:1", 1.0), ("4:5", 0.8), ("16:9", 16 / 9)):
        group = result.for_aspect(label)
        assert len(group) == 3 and [c.score for c in group] == sorted((c.score for c in group), reverse=True)
        for c in group:
            w, h = c.box[2] - c.box[0], c.box[3] - c.box[1]
            assert abs(w - h * ratio) <= max(1.0, ratio)  # exact to the pixel
            fx, fy = c.focus
            assert c.box[0] <= fx <= c.box[2] and c.box[1] <= fy <= c.box[3]
    single = cc.crop(HOPPER, query="a woman", top_k=3, aspect_ratio="4:5")
    assert [c.box for c in single] == [c.box for c in result.for_aspect("4:5")]
