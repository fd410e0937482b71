"""The calibrated test checkpoints behave like pretrained OWL-ViT, so they cannot decay unnoticed.

A randomly initialised OWL-ViT is degenerate (almost every token box zero-sized, logits in the
hundreds, one token winning every query); tests on it prove little. These properties are what
make the other tests of geometry, selection and ranking meaningful.
"""

from __future__ import annotations

import pytest
import torch
from conftest import sample_photo
from PIL import Image

from clipcrop.modeling.backbone import Backbone

PHOTOS = [
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "motorcycle_left.png",
    "grace_hopper.jpg",
    "horse.png",
]
QUERIES = [
    "a cat on a blanket",
    "the rocket engine exhaust plume at night",
    "a human face",
    "a helmet",
    "a flag",
    "a dog",
    "a photo of a cup",
    "a red car",
]
FIXTURES = ["tiny_backbone_dir", "tiny_owlv2_dir", "tiny_large_boxes_dir", "tiny_owlv2_large_boxes_dir"]


def _measure(folder) -> dict:
    bb = Backbone.from_pretrained(folder)
    text = bb.embed_texts(QUERIES)
    out = {
        "small_side": [],
        "under_005": [],
        "over_01": [],
        "distinct_top1": [],
        "norm_cv": [],
        "shift_ratio": [],
    }
    out.update(max_logit=0.0, median_side=[])
    for name in PHOTOS:
        img = Image.open(sample_photo(name)).convert("RGB")
        f = bb.encode(bb.preprocess([img]), [img.size])
        boxes = f.model_boxes[0]
        sides = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1)
        out["small_side"].append(float((sides.min(dim=1).values < 0.01).float().mean()))
        out["median_side"].append(float(sides.median()))
        logits = f.logits(text)[0]  # (N, Q)
        probs = torch.sigmoid(logits)
        out["under_005"].append(float((probs < 0.05).float().mean()))
        out["over_01"] += (probs > 0.1).float().mean(dim=0).tolist()
        out["distinct_top1"].append(len(set(logits.argmax(dim=0).tolist())))
        norms = f.raw_class_embeds[0].norm(dim=-1)
        out["norm_cv"].append(float(norms.std() / norms.mean()))
        cos = f.class_embeds[0] @ torch.nn.functional.normalize(text, dim=-1).T
        scale = f.logit_scale[0][:, None]
        out["shift_ratio"].append(float((f.logit_shift[0] * f.logit_scale[0]).std() / (cos * scale).std()))
        out["max_logit"] = max(out["max_logit"], float(logits.abs().max()))
    return out


@pytest.fixture(scope="module")
def measured(request):
    cache = {}

    def get(fixture):
        if fixture not in cache:
            cache[fixture] = _measure(request.getfixturevalue(fixture))
        return cache[fixture]

    return get


@pytest.mark.parametrize("fixture", FIXTURES)
def test_boxes_are_varied_and_not_degenerate(fixture, measured):
    m = measured(fixture)
    assert max(m["small_side"]) <= 0.01  # at most 1 % of token boxes with a side under 1 %
    assert min(m["median_side"]) >= 0.08


@pytest.mark.parametrize("fixture", FIXTURES)
def test_probabilities_look_like_owlvit(fixture, measured):
    m = measured(fixture)
    assert m["max_logit"] < 30  # not the +-1300 of raw random heads
    assert sum(m["under_005"]) / len(m["under_005"]) >= 0.8  # most tokens under 0.05 for a query
    over = m["over_01"]
    # a handful over 0.1 for a good share of the queries (many are of things a photo lacks) ...
    assert sum(1 for v in over if v > 0) >= len(over) / 3
    assert sum(over) / len(over) <= 0.1  # ... and only a handful


@pytest.mark.parametrize("fixture", FIXTURES)
def test_the_query_decides_the_ranking(fixture, measured):
    m = measured(fixture)
    assert min(m["distinct_top1"]) >= 4  # 8 queries: at least 4 different best tokens per photo
    assert max(m["shift_ratio"]) <= 0.25  # the per-token shift does not dominate the cosine term


def test_large_box_variants(measured):
    for fixture in ("tiny_large_boxes_dir", "tiny_owlv2_large_boxes_dir"):
        m = measured(fixture)
        assert min(m["median_side"]) >= 0.4
        assert min(m["norm_cv"]) >= 0.15  # class-embedding norms vary from token to token
    assert max(measured("tiny_backbone_dir")["median_side"]) < 0.4


def test_raw_random_heads_are_degenerate(tmp_path):
    """Why calibration exists: the same architecture uncalibrated fails these properties."""
    from conftest import DATA

    from clipcrop.synthetic.random_models import make_random_owlvit

    m = _measure(make_random_owlvit(tmp_path / "raw", DATA, size="tiny", seed=0))
    assert max(m["small_side"]) > 0.5 or m["max_logit"] > 100


@pytest.mark.parametrize("fixture", ["tiny_cc", "tiny_free_cc"])
def test_the_query_changes_the_crops(fixture, request):
    cc = request.getfixturevalue(fixture)
    changed = 0
    for name in PHOTOS:
        a = cc.crop(sample_photo(name), query="a cat on a blanket", top_k=3)
        b = cc.crop(sample_photo(name), query="the rocket engine exhaust plume at night", top_k=3)
        changed += a[0].box != b[0].box and a.union_box != b.union_box
    assert changed >= 4, changed


def test_make_random_backbone_command_writes_calibrated_checkpoints(tmp_path):
    """The command users run without weights gives the same calibrated behaviour (``--raw`` not)."""
    import json

    from conftest import DATA

    from clipcrop.cli.main import main

    for kind in ("owlvit", "owlv2"):
        out = tmp_path / kind
        assert (
            main(
                [
                    "make-random-backbone",
                    "--size",
                    "tiny",
                    "--kind",
                    kind,
                    "--tokenizer",
                    str(DATA),
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        assert json.loads((out / "config.json").read_text())["model_type"] == kind
        m = _measure(out)
        assert max(m["small_side"]) <= 0.01 and m["max_logit"] < 30 and min(m["distinct_top1"]) >= 4
    raw = tmp_path / "raw"
    assert (
        main(["make-random-backbone", "--size", "tiny", "--raw", "--tokenizer", str(DATA), "--out", str(raw)])
        == 0
    )
    m = _measure(raw)
    assert max(m["small_side"]) > 0.5 or m["max_logit"] > 100
