"""The evaluation harness and the train -> evaluate -> resume path through the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import sample_photo
from gaic_fixture import write_gaic
from PIL import Image

from clipcrop.data.datasets import load_textcrop
from clipcrop.errors import DatasetError
from clipcrop.evaluation.harness import BASELINES, EvalConfig, evaluate, evaluate_samples, load_gaic_for_eval
from clipcrop.evaluation.metrics import gaic_metrics, textcrop_metrics


@pytest.fixture(scope="module")
def gaic(tmp_path_factory):
    return write_gaic(tmp_path_factory.mktemp("gaic"))


def write_textcrop(root: Path) -> Path:
    """Three photos, four queries (one an image query); returns the manifest path."""
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name in ("astronaut.png", "coffee.png", "chelsea.png"):
        img = Image.open(sample_photo(name)).convert("RGB")
        img = img.resize((img.width // 4, img.height // 4))
        img.save(root / "imgs" / f"{Path(name).stem}.jpg")
        sizes[Path(name).stem] = img.size
    query_img = Image.open(sample_photo("rocket.jpg")).convert("RGB").resize((80, 53))
    query_img.save(root / "imgs" / "rocket_query.jpg")
    aw, ah = sizes["astronaut"]
    cw, ch = sizes["coffee"]
    kw, kh = sizes["chelsea"]
    entries = [
        {"image": "imgs/astronaut.jpg", "query": "a smiling astronaut", "boxes": [[0, 0, aw, ah]]},
        {
            "image": "imgs/coffee.jpg",
            "query": "a cup of coffee",
            "boxes": [[0, 0, cw, ch], [0, 0, cw // 2, ch]],
        },
        {"image": "imgs/chelsea.jpg", "query": "the face of a cat", "boxes": [[10, 5, kw - 20, kh - 5]]},
        {
            "image": "imgs/astronaut.jpg",
            "image_query": "imgs/rocket_query.jpg",
            "boxes": [[aw // 2, 0, aw, ah // 2], [aw // 3, 0, aw, ah]],
        },
    ]
    manifest = root / "annotations.json"
    manifest.write_text(json.dumps(entries))
    return manifest


def run_cli(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "clipcrop.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


# ----------------------------------------------------------------------------- harness, in process


def test_whole_image_baseline_is_hand_checkable(tiny_cc, tmp_path):
    """Human boxes: the whole image (IoU 1), whole + left half (IoU 1 and 0.5): the whole-image
    baseline's IoU-Mean over the first two samples is (1 + 0.75) / 2 and IoU-Max 1."""
    write_textcrop(tmp_path)
    samples = load_textcrop(tmp_path)
    two = evaluate_samples(tiny_cc, samples[:2], "textcrop", baselines=True)
    whole = two.baselines["whole_image"]
    assert whole["iou_mean"] == pytest.approx(0.875) and whole["iou_max"] == pytest.approx(1.0)
    one = evaluate_samples(tiny_cc, samples[:1], "textcrop", baselines=True)
    assert one.baselines["whole_image"]["iou_mean"] == 1.0

    result = evaluate_samples(tiny_cc, samples, "textcrop", baselines=True)
    assert result.samples == 4 and set(result.baselines) == set(BASELINES)
    for metrics in [result.metrics, *result.baselines.values()]:
        assert 0.0 <= metrics["iou_mean"] <= metrics["iou_max"] <= 1.0
        assert metrics["num_samples"] == 4
    # the image-query sample was cropped for its query image, and OWL-ViT's box used it too
    rec = result.predictions[3]
    assert rec["image_query"].endswith("rocket_query.jpg") and rec["query"] is None
    assert "owlvit_top1" in rec["baselines"]
    # metrics recomputed from the records agree
    again = textcrop_metrics((r["crops"][0]["box"], r["annotations"]["boxes"]) for r in result.predictions)
    assert again == result.metrics


def test_table_on_stdout_without_json(tiny_clipcrop_dir, tmp_path, capsys):
    from clipcrop.cli.main import main

    write_textcrop(tmp_path)
    code = main(
        [
            "evaluate",
            "--dataset",
            "textcrop",
            "--root",
            str(tmp_path),
            "--model",
            str(tiny_clipcrop_dir),
            "--baselines",
            "--limit",
            "2",
            "--quiet",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "iou_mean" in out and "whole_image" in out and "training_free" in out and "ClipCrop" in out


def test_gaic_unconditioned_without_captions(tiny_cc, gaic):
    samples = load_gaic_for_eval(gaic.root, "test", None)
    result = evaluate_samples(tiny_cc, samples, "gaic", baselines=True)
    assert all(r["query"] is None for r in result.predictions)
    assert "owlvit_top1" not in result.baselines  # needs a condition
    # without a condition b_u is the whole image
    assert result.baselines["union_box"] == result.baselines["whole_image"]
    assert all(len(r["crops"]) == 10 for r in result.predictions)  # Acc1/10 needs 10 ranked crops
    for key in ("acc1_5", "acc1_10", "acc_iou85_top5", "iou_top1_best"):
        assert 0.0 <= result.metrics[key] <= 1.0


def test_gaic_captions_from_a_file(gaic, tmp_path, tiny_cc):
    captions = json.loads((gaic.text_dir / "test.json").read_text())
    good = tmp_path / "captions.json"
    good.write_text(json.dumps(captions))
    samples = load_gaic_for_eval(gaic.root, "test", good)
    assert [s.caption for s in samples] == [captions[s.name] for s in samples]
    captions.pop(samples[0].name)
    bad = tmp_path / "missing.json"
    bad.write_text(json.dumps(captions))
    with pytest.raises(DatasetError, match=samples[0].name):
        load_gaic_for_eval(gaic.root, "test", bad)
    preds = tmp_path / "out" / "preds.jsonl"
    result = evaluate(
        EvalConfig("gaic", str(gaic.root), str(good), save_predictions=str(preds), limit=2), tiny_cc
    )
    assert result.samples == 2 and len(preds.read_text().splitlines()) == 2
    assert sorted(p.name for p in preds.parent.iterdir()) == ["preds.jsonl"]  # no temporary left


# ----------------------------------------------------------------------------- command line


SMALL = ["--num-queries", 12, "--d-model", 32, "--num-layers", 2, "--num-heads", 4, "--ffn-dim", 64]


def test_train_evaluate_resume_cli(gaic, tiny_backbone_dir, tmp_path):
    out = tmp_path / "ck"
    train_args = [
        "train",
        "--gaic-root",
        gaic.root,
        "--text-annotations",
        gaic.text_dir,
        "--backbone",
        tiny_backbone_dir,
        "--out",
        out,
        "--max-steps",
        10,
        "--batch-size",
        4,
        "--lr",
        "1e-3",
        "--variant",
        "key",
        "--save-every",
        4,
        "--cpu",
        "--seed",
        1,
        *SMALL,
    ]
    r = run_cli(*train_args, "--stop-after", 6)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    saved = json.loads((out / "config.json").read_text())
    assert saved["selection"]["use_keywords"] and not saved["selection"]["use_full_text"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    # every 4 steps and at each epoch's end (6 samples, batch 4: 2 steps an epoch), and the stop
    assert [e["step"] for e in log if e["event"] == "checkpoint"] == [2, 4, 6]

    # GAIC, captions as queries, with baselines and a predictions file
    preds = tmp_path / "gaic.jsonl"
    r = run_cli(
        "evaluate",
        "--dataset",
        "gaic",
        "--root",
        gaic.root,
        "--annotations",
        gaic.text_dir,
        "--model",
        out,
        "--json",
        "--baselines",
        "--save-predictions",
        preds,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["samples"] == 6
    assert set(data["baselines"]) == set(BASELINES)
    for metrics in [data["metrics"], *data["baselines"].values()]:
        for key in ("acc1_5", "acc1_10", "acc_iou85_top5", "acc_iou90_top10", "iou_top1_best"):
            assert 0.0 <= metrics[key] <= 1.0
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    # top_k = 10; a barely trained decoder may give fewer distinct pixel boxes (exact duplicates are dropped)
    assert len(lines) == 6 and all(1 <= len(rec["crops"]) <= 10 for rec in lines)
    assert all(rec["query"] and rec["mode"] == "trained" for rec in lines)
    recomputed = gaic_metrics(
        ([c["box"] for c in rec["crops"]], rec["annotations"]["boxes"], rec["annotations"]["mos"])
        for rec in lines
    )
    assert {k: data["metrics"][k] for k in recomputed} == pytest.approx(recomputed)
    whole = gaic_metrics(
        (rec["baselines"]["whole_image"], rec["annotations"]["boxes"], rec["annotations"]["mos"])
        for rec in lines
    )
    assert {k: data["baselines"]["whole_image"][k] for k in whole} == pytest.approx(whole)

    # TextCrop format with an image query; a table on stdout without --json
    manifest = write_textcrop(tmp_path / "textcrop")
    tpreds = tmp_path / "textcrop.jsonl"
    r = run_cli(
        "evaluate",
        "--dataset",
        "textcrop",
        "--root",
        tmp_path / "textcrop",
        "--annotations",
        manifest,
        "--model",
        out,
        "--json",
        "--baselines",
        "--save-predictions",
        tpreds,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["samples"] == 4
    assert 0.0 <= data["metrics"]["iou_mean"] <= data["metrics"]["iou_max"] <= 1.0
    lines = [json.loads(line) for line in tpreds.read_text().splitlines()]
    recomputed = textcrop_metrics((rec["crops"][0]["box"], rec["annotations"]["boxes"]) for rec in lines)
    assert data["metrics"] == pytest.approx(recomputed)
    for name in BASELINES:
        again = textcrop_metrics((rec["baselines"][name][0], rec["annotations"]["boxes"]) for rec in lines)
        assert data["baselines"][name] == pytest.approx(again)
    assert "whole_image" in r.stderr and "training_free" in r.stderr  # with --json the table is on stderr

    # resume to the end: the log continues from step 7
    r = run_cli(*train_args, "--resume")
    assert r.returncode == 0, r.stderr
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if e["event"] == "step"] == list(range(1, 11))
    assert json.loads((out / "config.json").read_text())["training"]["variant"] == "key"


def test_cli_errors_are_one_line(gaic, tiny_backbone_dir, tmp_path):
    fx = write_gaic(tmp_path / "g", {"train": ["astronaut.png", "coffee.png"]}, drop_captions=("coffee.jpg",))
    r = run_cli(
        "train",
        "--gaic-root",
        fx.root,
        "--text-annotations",
        fx.text_dir,
        "--backbone",
        tiny_backbone_dir,
        "--out",
        tmp_path / "ck",
        "--max-steps",
        1,
        "--cpu",
    )
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("clipcrop: error:")]
    assert len(errors) == 1 and "coffee.jpg" in errors[0] and "caption" in errors[0]
    assert "Traceback" not in r.stderr and not (tmp_path / "ck" / "config.json").exists()
    r = run_cli(
        "evaluate", "--dataset", "textcrop", "--root", tmp_path / "nothing", "--model", tiny_backbone_dir
    )
    assert r.returncode == 2 and "nothing: no such folder" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "nothing").mkdir()
    r = run_cli(
        "evaluate", "--dataset", "textcrop", "--root", tmp_path / "nothing", "--model", tiny_backbone_dir
    )
    assert r.returncode == 1 and "annotations.json" in r.stderr and "Traceback" not in r.stderr
