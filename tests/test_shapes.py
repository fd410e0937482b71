"""The synthetic shapes world: scene generator, crop rule, benchmark data, demo, and the benchmark
itself in its CI size (``benchmarks/shapes/run.py --small``: proof that conditioning works)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipcrop.synthetic.shapes import (
    COLOURS,
    MAX_OVERLAP,
    SHAPES,
    crop_iou,
    crop_quality,
    crop_quality_terms,
    describe,
    distinct_pair,
    grid_candidates,
    make_scene,
    quality_to_mos,
    target_crops,
)

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "shapes"

# CI margins of the --small run (see test_small_benchmark_shows_conditioning_works)
MARGIN_OVER_WHOLE_IMAGE = 0.10
MARGIN_OVER_OWLVIT_TOP1 = 0.14
MARGIN_TRAINING_FREE_OVER_WHOLE = 0.10
MIN_AMBIGUITY = 0.75
MIN_IMAGE_QUERY_GAIN = 0.08
# ClipCrop led training-free mode by only 0.007-0.014 in the --small runs: the order is asserted
# with a tolerance, so thread counts or a CPU's rounding cannot flip a correct build to red
MAX_TRAINING_FREE_LEAD = 0.02


def _generate_module():
    spec = importlib.util.spec_from_file_location("shapes_generate", BENCH / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- scenes


def test_scenes_are_deterministic_in_seed_and_index():
    a, b = make_scene(3, seed=1), make_scene(3, seed=1)
    assert a.objects == b.objects
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    c = make_scene(3, seed=2)
    assert c.objects != a.objects or not np.array_equal(np.asarray(a.image), np.asarray(c.image))
    assert make_scene(4, seed=1).objects != a.objects


def test_scenes_have_unique_colour_shape_pairs_inside_the_image():
    counts = set()
    overlapping = 0
    for i in range(30):
        s = make_scene(i, seed=0)
        assert s.image.size == (384, 384) and s.image.mode == "RGB"
        names = [o.name for o in s.objects]
        assert len(names) == len(set(names)), names
        assert 2 <= len(names) <= 5
        counts.add(len(names))
        for o in s.objects:
            assert o.colour in COLOURS and o.shape in SHAPES
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= 384 and 0 <= y0 < y1 <= 384
            assert 0.1 * 384 <= x1 - x0 <= 0.4 * 384
            assert s.find(o.name) == names.index(o.name)
        boxes = s.boxes()
        for p in range(len(boxes)):
            for q in range(p + 1, len(boxes)):
                lt = np.maximum(boxes[p, :2], boxes[q, :2])
                rb = np.minimum(boxes[p, 2:], boxes[q, 2:])
                inter = np.prod(np.clip(rb - lt, 0, None))
                smaller = min(np.prod(boxes[p, 2:] - boxes[p, :2]), np.prod(boxes[q, 2:] - boxes[q, :2]))
                assert inter / smaller <= MAX_OVERLAP + 1e-6
                overlapping += inter > 0
    assert counts == {2, 3, 4, 5}
    assert overlapping > 0, "some objects should overlap"


def test_backgrounds_are_textured_not_flat():
    s = make_scene(0, seed=0)
    arr = np.asarray(s.image, dtype=np.float64)
    mask = np.ones(arr.shape[:2], bool)
    for o in s.objects:
        x0, y0, x1, y1 = (int(v) for v in o.box)
        mask[max(0, y0 - 4) : y1 + 4, max(0, x0 - 4) : x1 + 4] = False
    assert arr[mask].std(axis=0).mean() > 5


def test_describe_refers_to_one_or_two_objects():
    s = make_scene(1, seed=0)
    a, b = s.objects[0], s.objects[1]
    assert describe(s, [0]) == f"the {a.colour} {a.shape}"
    assert describe(s, [0, 1], "a") == f"a {a.name} and a {b.name}"


# ----------------------------------------------------------------------------- the crop rule


def test_rule_prefers_balanced_margins_around_the_subject():
    subject = np.array([100.0, 100.0, 160.0, 160.0])
    others = np.zeros((0, 4))
    good = [70, 70, 190, 190]  # subject fills 25%, margins equal
    lopsided = [95, 95, 250, 250]
    cut = [120, 70, 240, 190]  # cuts the subject
    tiny = [0, 0, 384, 384]  # subject fills 2.4%
    tight = [99, 99, 161, 161]
    q = crop_quality(np.array([good, lopsided, cut, tiny, tight], dtype=float), subject, others)
    assert q[0] == pytest.approx(1.0)
    assert q[0] > q[1] and q[0] > q[4] and q[0] > q[3]
    assert q[2] < 0.5 * q[0]
    assert ((q >= 0) & (q <= 1)).all()
    mos = quality_to_mos(q)
    assert mos[0] == pytest.approx(5.0) and mos.min() >= 1.0


def test_rule_penalises_cutting_through_other_objects():
    subject = np.array([100.0, 100.0, 160.0, 160.0])
    other = np.array([[175.0, 100.0, 235.0, 160.0]])
    crops = np.array([[70, 70, 190, 190], [40, 70, 160 + 30, 190], [60, 60, 250, 200]], dtype=float)
    terms = crop_quality_terms(crops, subject, other)
    assert terms["cut"][0] > 0.9  # 25% of the other object inside: cut
    q_with, q_without = crop_quality(crops, subject, other), crop_quality(crops, subject, np.zeros((0, 4)))
    assert q_with[0] < q_without[0] - 0.25
    assert terms["cut"][2] == pytest.approx(0.0)  # takes it whole: not cut


def test_grid_candidates_are_gaic_like():
    cands = grid_candidates(384, 384)
    w, h = cands[:, 2] - cands[:, 0], cands[:, 3] - cands[:, 1]
    assert len(cands) > 500
    assert (w >= 96 - 1e-6).all() and (h >= 96 - 1e-6).all()
    assert ((w / h <= 2 + 1e-9) & (h / w <= 2 + 1e-9)).all()
    assert np.allclose(cands % 32, 0)


def test_target_crops_contain_the_subject_in_several_shapes():
    for i in range(10):
        s = make_scene(i, seed=3)
        for idx in ([0], [0, 1]):
            crops = target_crops(s, idx)
            assert 1 <= len(crops) <= 4
            subject = s.subject_box(idx)
            assert (crops[:, :2] <= subject[:2] + 1e-6).all() and (crops[:, 2:] >= subject[2:] - 1e-6).all()
            assert (crops >= 0).all() and (crops[:, 2] <= 384).all() and (crops[:, 3] <= 384).all()
            for a in range(len(crops)):
                for b in range(a + 1, len(crops)):
                    assert crop_iou(crops[a], crops[b]) <= 0.85
    s = make_scene(0, seed=3)
    aspects = {round((c[2] - c[0]) / (c[3] - c[1]), 2) for c in target_crops(s, [0])}
    assert len(aspects) >= 2


def test_distinct_pair_picks_objects_with_different_crops():
    found = 0
    for i in range(10):
        s = make_scene(i, seed=0)
        pair = distinct_pair(s, np.random.default_rng(i))
        if pair is None:
            continue
        found += 1
        a, b = (target_crops(s, [j], max_crops=1)[0] for j in pair)
        assert crop_iou(a, b) <= 0.3
    assert found >= 7


# ----------------------------------------------------------------------------- benchmark data


def test_generated_data_is_readable_by_every_loader(tmp_path):
    from clipcrop.data.datasets import load_gaic, load_textcrop
    from clipcrop.data.detection import load_detection_manifest

    gen = _generate_module()
    meta = gen.generate(tmp_path, seed=2, train=6, val=2, test=6)
    assert meta["scenes"] == {"train": 6, "val": 2, "test": 6}
    train = load_gaic(tmp_path / "gaic", "train", tmp_path / "gaic_text")
    assert len(train) == meta["gaic_entries"]["train"] >= 10  # several subjects per training scene
    for sample in train:
        assert sample.caption.startswith(("the ", "a "))
        assert len(sample.mos) == 64 and 1.0 <= sample.mos.min() and sample.mos.max() <= 5.0
    # two entries of one scene: same picture, different captions and crops
    first = [s for s in train if s.name.startswith("s00000_")]
    assert len(first) == 2 and first[0].caption != first[1].caption
    assert load_gaic(tmp_path / "gaic", "test", tmp_path / "gaic_text")
    det = load_detection_manifest(tmp_path / "detection" / "train.jsonl")
    assert len(det) == 6 and all(len(d.texts) >= 2 for d in det)
    text = load_textcrop(tmp_path, tmp_path / "text_queries.json")
    entries = json.loads((tmp_path / "text_queries.json").read_text())
    assert len(text) == len(entries) == meta["text_queries"]
    assert {e["kind"] for e in entries} == {"single", "pair"}
    for e, s in zip(entries, text, strict=True):
        assert s.query == e["query"] and 1 <= len(s.boxes_xyxy_px) <= 4
        assert (" and " in s.query) == (e["kind"] == "pair")
    image = load_textcrop(tmp_path, tmp_path / "image_queries.json")
    assert len(image) == meta["image_queries"] >= 4
    for s in image:
        assert s.query is None and s.image_query_path.is_file()
    # same seed, same data
    again = _generate_module().generate(tmp_path / "again", seed=2, train=6, val=2, test=6)
    assert again == meta
    assert (tmp_path / "text_queries.json").read_text() == (
        tmp_path / "again" / "text_queries.json"
    ).read_text()


def test_demo_renders_two_queries_per_scene(tiny_clipcrop_dir, tmp_path, capsys):
    from clipcrop.cli.main import main

    assert (
        main(["demo-shapes", "--model", str(tiny_clipcrop_dir), "--out", str(tmp_path), "--scenes", "2"]) == 0
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    for k, rec in enumerate(lines):
        assert Path(rec["picture"]) == tmp_path / f"demo_{k}.jpg" and Path(rec["picture"]).is_file()
        assert len(rec["queries"]) == 2 and rec["queries"][0]["query"] != rec["queries"][1]["query"]
        assert rec["mode"] == "trained"
        for q in rec["queries"]:
            assert q["crops"] and 0.0 <= q["iou_top1"] <= 1.0
    with pytest.raises(SystemExit):  # --model is required
        main(["demo-shapes", "--out", str(tmp_path)])


# ----------------------------------------------------------------------------- the benchmark


def test_small_benchmark_shows_conditioning_works(tmp_path):
    """The whole pipeline in its CI size: generate, finetune-backbone from scratch, train with
    mosaics, evaluate with baselines on held-out scenes.

    Margins: three measured --small runs (seeds 0, 1, 2 on the 2-core dev machine, 4.9-5.1 min)
    gave text IoU-Mean gaps of ClipCrop over the whole image 0.226 / 0.243 / 0.215, over OWL-ViT's
    top-1 box 0.303 / 0.335 / 0.307, over training-free mode 0.009 / 0.014 / 0.007, training-free
    over the whole image 0.208-0.229, ambiguity 0.917-0.975 and image-query gains of 0.22-0.25 over
    the whole image. Each asserted margin is about half the smallest gap seen, so the test checks
    the orderings, not one lucky seed; ClipCrop vs training-free, too close for a margin in this
    size, is checked with a tolerance (the full run separates them by 0.05).
    """
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--small", "--out", str(tmp_path / "bench")],
        capture_output=True,
        text=True,
        timeout=1500,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(table) == {"text", "image", "ambiguity", "minutes"}
    text, image = table["text"], table["image"]
    assert set(text) == {"clipcrop", "training_free", "whole_image", "owlvit_top1", "union_box"}
    assert text["clipcrop"]["iou_mean"] > text["whole_image"]["iou_mean"] + MARGIN_OVER_WHOLE_IMAGE, table
    assert text["clipcrop"]["iou_mean"] > text["owlvit_top1"]["iou_mean"] + MARGIN_OVER_OWLVIT_TOP1, table
    assert (
        text["training_free"]["iou_mean"] > text["whole_image"]["iou_mean"] + MARGIN_TRAINING_FREE_OVER_WHOLE
    )
    # training-free mode sits between ClipCrop and the baselines
    assert text["training_free"]["iou_mean"] < text["clipcrop"]["iou_mean"] + MAX_TRAINING_FREE_LEAD, table
    assert text["training_free"]["iou_mean"] > text["owlvit_top1"]["iou_mean"], table
    assert text["training_free"]["iou_mean"] > text["union_box"]["iou_mean"], table
    assert text["clipcrop"]["iou_max"] > text["whole_image"]["iou_max"]
    assert table["ambiguity"] >= MIN_AMBIGUITY, table
    assert image["clipcrop"]["iou_mean"] > image["whole_image"]["iou_mean"] + MIN_IMAGE_QUERY_GAIN, table
    report = json.loads((tmp_path / "bench" / "report.json").read_text())
    assert (
        report["backbone_top1_val"]["trained"]["hit_rate"]
        > report["backbone_top1_val"]["untrained"]["hit_rate"]
    )
    for folder in ("owlvit-shapes", "clipcrop-shapes"):
        assert (tmp_path / "bench" / folder / "config.json").is_file()


def test_benchmark_backbone_has_the_profile_shape(tmp_path):
    """run.py builds its OWL-ViT through make_random_owlvit with a shape of its own."""
    from transformers import OwlViTConfig

    from clipcrop.synthetic.random_models import make_random_owlvit

    spec = importlib.util.spec_from_file_location("shapes_run", BENCH / "run.py")
    run = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = run  # its dataclasses look their module up there
    spec.loader.exec_module(run)
    p = run.SMALL
    out = run.make_backbone(tmp_path / "owlvit", REPO / "tests" / "data", p, seed=0)
    config = OwlViTConfig.from_pretrained(out)
    v, t = config.vision_config, config.text_config
    assert (v.image_size, v.patch_size, v.hidden_size, v.num_hidden_layers) == (
        p.image_size,
        p.patch_size,
        p.vision_width,
        p.vision_layers,
    )
    assert (t.hidden_size, t.num_hidden_layers, config.projection_dim) == (
        p.text_width,
        p.text_layers,
        p.text_width,
    )
    assert (out / "tokenizer_config.json").is_file() and (out / "preprocessor_config.json").is_file()
    with pytest.raises(ValueError, match="lacks image_size"):
        make_random_owlvit(tmp_path / "bad", REPO / "tests" / "data", size={"patch_size": 16})
