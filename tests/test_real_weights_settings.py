"""Settings that matter on real weights, checked on the calibrated checkpoints: the keyword prompt
template, the selection cut, the "other objects" threshold, truncation and the minimum crop."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import sample_photo

from clipcrop import ClipCrop
from clipcrop.errors import ParameterError
from clipcrop.modeling.selection import condition_texts
from clipcrop.modeling.selection_settings import DEFAULT_SELECTION, PROMPT_TEMPLATE

HOPPER = sample_photo("grace_hopper.jpg")
PHOTOS = [sample_photo(n) for n in ("astronaut.png", "chelsea.png", "coffee.png", "grace_hopper.jpg")]


def test_keywords_are_embedded_in_the_prompt_template():
    texts, labels = condition_texts("a woman and three dogs on the boat", DEFAULT_SELECTION)
    assert texts == [
        "a woman and three dogs on the boat",
        "a photo of a woman",
        "a photo of a three dogs",
        "a photo of a boat",
    ]
    assert labels == ["full text", "woman", "three dogs", "boat"]
    plain, _ = condition_texts("a woman on the boat", {**DEFAULT_SELECTION, "prompt_template": "{}"})
    assert plain == ["a woman on the boat", "woman", "boat"]


def test_the_template_reaches_the_embeddings(tiny_free_cc):
    cond = tiny_free_cc.prepare_condition("a woman in uniform")
    expected = tiny_free_cc.backbone.embed_texts(
        ["a woman in uniform", "a photo of a woman", "a photo of a uniform"]
    )
    assert torch.allclose(cond.embeds, expected)


def test_settings_are_stored_in_checkpoints_and_overridable(tiny_cc, tmp_path):
    tiny_cc.model.save_pretrained(tmp_path / "ckpt")
    stored = json.loads((tmp_path / "ckpt" / "config.json").read_text())["selection"]
    assert stored["prompt_template"] == PROMPT_TEMPLATE
    assert stored["min_score"] == 0.05 and stored["object_threshold"] == 0.1
    cc = ClipCrop.from_pretrained(tmp_path / "ckpt", selection={"prompt_template": "an image of {}"})
    assert cc.selection_settings["prompt_template"] == "an image of {}"
    assert cc.selection_settings["min_score"] == 0.05
    with pytest.raises(ParameterError, match="unknown selection settings: min_scor"):
        ClipCrop(tiny_cc.backbone, selection={"min_scor": 0.1})


def test_selection_keeps_exactly_the_keywords_over_the_cut(tiny_free_cc):
    """A keyword is kept when its best token's OWL-ViT probability (what ``detect`` reports for
    its prompt) reaches min_score; the best selection is kept in any case."""
    cut = tiny_free_cc.selection_settings["min_score"]
    seen_kept = seen_dropped = 0
    for photo in PHOTOS:
        for query in ("a woman in uniform with a flag", "a cat and a cup on the table"):
            result = tiny_free_cc.crop(photo, query=query, top_k=1)
            _, labels = condition_texts(query, tiny_free_cc.selection_settings)
            probs = {}
            for label in labels:
                text = query if label == "full text" else PROMPT_TEMPLATE.format(label)
                probs[label] = tiny_free_cc.detect(photo, query=text, top_k=1)[0].score
            best = max(probs, key=probs.get)
            for label in labels[1:]:
                kept = label in result.keywords
                assert kept == (probs[label] >= cut or label == best), (photo, query, label, probs)
                seen_kept += kept
                seen_dropped += not kept
    assert seen_kept and seen_dropped  # the calibrated model exercises both sides of the cut


def test_object_threshold_changes_training_free_ranking(tiny_backbone_dir):
    strict = ClipCrop.from_pretrained(tiny_backbone_dir, selection={"object_threshold": 0.999})
    loose = ClipCrop.from_pretrained(tiny_backbone_dir, selection={"object_threshold": 0.02})
    differ = sum(
        [c.box for c in strict.crop(p, query="a human face", top_k=5)]
        != [c.box for c in loose.crop(p, query="a human face", top_k=5)]
        for p in PHOTOS
    )
    assert differ >= 1


LONG = "a very tall man in a dark blue suit and a red tie standing next to a small white dog on the beach"


@pytest.mark.parametrize("fixture", ["tiny_cc", "tiny_free_cc"])
def test_long_text_is_flagged_truncated_and_keywords_carry_the_rest(fixture, request):
    cc = request.getfixturevalue(fixture)
    assert cc.backbone.is_truncated(LONG) and not cc.backbone.is_truncated("a dog")
    result = cc.crop(HOPPER, query=LONG, top_k=2)
    assert result.truncated is True
    assert result.to_dict()["truncated"] is True
    _, labels = condition_texts(LONG, cc.selection_settings)
    assert "beach" in labels  # past the 16th token, still embedded as a keyword
    assert cc.crop(HOPPER, query="a dog", top_k=1).to_dict()["truncated"] is False
    assert cc.detect(HOPPER, query=LONG, top_k=1).to_dict()["truncated"] is True


def _min_ok(box, width, height, area=0.05, side=16) -> bool:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    # rounding to whole pixels may take one pixel off each side
    return (
        w >= min(side, width) - 1
        and h >= min(side, height) - 1
        and (w + 1) * (h + 1) >= area * width * height
    )


@pytest.mark.parametrize("fixture", ["tiny_cc", "tiny_free_cc"])
@pytest.mark.parametrize("aspect", [None, "1:1", "16:9", "1:3"])
def test_no_degenerate_crops_and_top_k_is_filled(fixture, aspect, request):
    cc = request.getfixturevalue(fixture)
    for photo in PHOTOS:
        for query in ("a human face", None):
            result = cc.crop(photo, query=query, top_k=10, aspect_ratio=aspect)
            assert len(result) == 10, (photo, query, aspect)  # these photos hold 10 distinct crops
            assert len({c.box for c in result}) == 10
            for c in result:
                assert _min_ok(c.box, result.width, result.height), (photo, query, aspect, c.box)


def test_min_crop_size_is_a_setting(tiny_backbone_dir):
    big = ClipCrop.from_pretrained(tiny_backbone_dir, min_crop_area=0.5, min_crop_side=200)
    for c in big.crop(HOPPER, query="a face", top_k=5):
        x0, y0, x1, y1 = c.box
        assert (x1 - x0) >= 199 and (y1 - y0) >= 199
        assert (x1 - x0 + 1) * (y1 - y0 + 1) >= 0.5 * 512 * 600
    with pytest.raises(ParameterError):
        ClipCrop.from_pretrained(tiny_backbone_dir, min_crop_area=1.5)


def test_tiny_image_gets_what_it_can_hold(tiny_free_cc, tmp_path):
    from PIL import Image

    Image.new("RGB", (12, 9), (200, 30, 30)).save(tmp_path / "small.png")
    result = tiny_free_cc.crop(tmp_path / "small.png", query="a red square", top_k=5)
    assert 1 <= len(result) <= 5
    assert all(c.box[2] - c.box[0] >= 11 and c.box[3] - c.box[1] >= 8 for c in result)
