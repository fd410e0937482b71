"""An OWLv2 folder end to end: ``crop``, ``detect``, ``finetune-backbone``, ``train`` and ``evaluate``
on the calibrated tiny OWLv2 (black square padding, objectness head, the text tower at
``model.owlv2`` rather than ``model.owlvit``)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import sample_photo
from gaic_fixture import write_gaic
from safetensors.torch import load_file
from test_cli import run_cli
from test_cli_detect import assert_same_crops, assert_same_detections
from test_evaluation import SMALL
from test_finetune import scenes_dir  # noqa: F401 - the shapes scenes fixture

from clipcrop.cli.main import main
from clipcrop.modeling.backbone import Backbone
from clipcrop.modeling.model import resolve_backbone_ref
from clipcrop.predictor import ClipCrop

WIDE = sample_photo("coffee.png")  # 600 x 400: OWLv2 pads it to a square
TALL = sample_photo("grace_hopper.jpg")  # 512 x 600


@pytest.fixture(scope="module")
def owlv2(tiny_owlv2_dir) -> ClipCrop:
    cc = ClipCrop.from_pretrained(tiny_owlv2_dir)
    assert cc.backbone.model.config.model_type == "owlv2"
    return cc


def test_crop_cli(tiny_owlv2_dir, owlv2):
    r = run_cli(
        "crop",
        str(WIDE),
        str(TALL),
        "-q",
        "a cup of coffee",
        "-k",
        "3",
        "--json",
        "--model",
        str(tiny_owlv2_dir),
    )
    assert r.returncode == 0, r.stderr
    for line, photo in zip(r.stdout.splitlines(), (WIDE, TALL), strict=True):
        got = json.loads(line)
        expected = owlv2.crop(str(photo), query="a cup of coffee", top_k=3).to_dict()
        assert {k: v for k, v in got.items() if k != "crops"} == {
            k: v for k, v in expected.items() if k != "crops"
        }
        assert_same_crops(got["crops"], expected["crops"])
        assert got["error"] is None and len(got["crops"]) == 3
        for crop in got["crops"]:
            x0, y0, x1, y1 = crop["box"]
            assert 0 <= x0 < x1 <= got["width"] and 0 <= y0 < y1 <= got["height"]


def test_detect_cli_text_and_image_query(tiny_owlv2_dir, owlv2):
    model = ("--model", str(tiny_owlv2_dir), "--json", "-k", "4")
    r = run_cli("detect", str(WIDE), "-q", "a cup of coffee", *model)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert_same_detections(got, owlv2.detect(str(WIDE), query="a cup of coffee", top_k=4).to_dict())
    scores = [d["score"] for d in got["detections"]]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    # boxes are in the photo's own pixels (not the padded square's): clamped to 600 x 400
    assert all(d["box"][3] <= 400 and d["box"][2] <= 600 for d in got["detections"])
    r = run_cli("detect", str(WIDE), "--image-query", str(TALL), *model)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert_same_detections(got, owlv2.detect(str(WIDE), image_query=str(TALL), top_k=4).to_dict())
    assert isinstance(got["query_token"], int)


def test_finetune_backbone_cli(scenes_dir, tiny_owlv2_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "owlv2-tuned"
    argv = ["finetune-backbone", "--data", str(scenes_dir / "train.jsonl"), "--backbone", str(tiny_owlv2_dir)]
    argv += ["--out", str(out), "--batch-size", "2", "--max-steps", "4", "--lr", "1e-3", "--cpu", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "fine-tuned to step 4/4" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["model_type"] == "owlv2"
    tuned = Backbone.from_pretrained(out)
    assert type(tuned.model).__name__ == "Owlv2ForObjectDetection"
    before, after = load_file(tiny_owlv2_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    vision = next(k for k in before if "vision_model" in k and k.endswith("q_proj.weight"))
    text = next(k for k in before if "text_model" in k and k.endswith("q_proj.weight"))
    tokens = next(k for k in before if k.endswith("token_embedding.weight"))
    assert not torch.equal(before[vision], after[vision])  # the image side learnt
    assert not torch.equal(before[text], after[text])  # the text tower too (train_text, the default)
    assert torch.equal(before[tokens], after[tokens])  # the token table stays frozen (the default)
    log = [json.loads(line) for line in (out / "finetune_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["event"] == "step"] == [1, 2, 3, 4]
    # the output is an ordinary OWLv2 folder: it crops and detects
    cc = ClipCrop.from_pretrained(out)
    assert len(cc.detect(scenes_dir / "img" / "s0.png", query="a red circle", top_k=2)) == 2


@pytest.fixture(scope="module")
def gaic(tmp_path_factory):
    return write_gaic(tmp_path_factory.mktemp("gaic-owlv2"), {"train": ["coffee.png", "astronaut.png"],
                                                             "test": ["coffee.png", "astronaut.png"]})  # fmt: skip


@pytest.fixture(scope="module")
def trained(gaic, tiny_owlv2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("owlv2-ck") / "ck"
    argv = ["train", "--gaic-root", str(gaic.root), "--text-annotations", str(gaic.text_dir)]
    argv += ["--backbone", str(tiny_owlv2_dir), "--out", str(out), "--max-steps", "2", "--batch-size", "2"]
    argv += ["--cpu", "--quiet", *map(str, SMALL)]
    assert main(argv) == 0
    return out


def test_train(trained, tiny_owlv2_dir, gaic):
    config = json.loads((trained / "config.json").read_text())
    assert config["clipcrop_format"] and config["decoder"]["num_queries"] == 12
    assert resolve_backbone_ref(config["backbone"], trained) == str(tiny_owlv2_dir.resolve())
    cc = ClipCrop.from_pretrained(trained)
    assert cc.mode == "trained" and cc.backbone.model.config.model_type == "owlv2"
    result = cc.crop(gaic.root / "images" / "test" / "coffee.jpg", query="a cup of coffee", top_k=3)
    assert 1 <= len(result) <= 3 and result.mode == "trained"


def test_evaluate(trained, gaic, capsys):
    argv = ["evaluate", "--dataset", "gaic", "--root", str(gaic.root), "--annotations", str(gaic.text_dir)]
    assert main([*argv, "--model", str(trained), "--json", "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["samples"] == 2
    for key in ("acc1_5", "acc1_10", "acc_iou85_top5", "acc_iou90_top10", "iou_top1_best"):
        assert 0.0 <= data["metrics"][key] <= 1.0, key
    assert data["metrics"]["iou_top1_best"] > 0.0  # a real overlap with the annotated crops
