"""Long-run features of ``clipcrop train`` on the GAIC-format fixture (tiny random OWL-ViT):
validation each epoch and ``best/``, TensorBoard events, a killed run resumed, two processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_DECODER
from gaic_fixture import PHOTOS, write_gaic
from safetensors.torch import load_file

from clipcrop.data.datasets import load_gaic
from clipcrop.training.config import LOG_FILE, TrainConfig
from clipcrop.training.trainer import train

DECODER = {k: v for k, v in TINY_DECODER.items() if k != "input_dim"}
VAL = ["chelsea.png", "rocket.jpg", "grace_hopper.jpg"]


@pytest.fixture(scope="module")
def gaic(tmp_path_factory):
    """Train on all six photos, validate on three of them (val), test on all."""
    return write_gaic(
        tmp_path_factory.mktemp("gaic"), {"train": list(PHOTOS), "val": VAL, "test": list(PHOTOS)}
    )


@pytest.fixture(scope="module")
def val_text(gaic, tmp_path_factory):
    """A TextCrop-format manifest over the val images: the caption, the best crop as the human one."""
    root = gaic.root
    entries = []
    for s in load_gaic(root, "val", gaic.text_dir):
        best = s.boxes_xyxy_px[s.best_crop_index()].tolist()
        entries.append({"image": str(s.image_path.relative_to(root)), "query": s.caption, "boxes": [best]})
    path = root / "val_text.json"
    path.write_text(json.dumps(entries))
    return path


def config(gaic, backbone_dir, out, **changes) -> TrainConfig:
    base = dict(
        gaic_root=str(gaic.root),
        text_annotations=str(gaic.text_dir),
        backbone=str(backbone_dir),
        out_dir=str(out),
        batch_size=4,
        lr=2e-3,
        decoder={**DECODER, "dropout": 0.1},
        device="cpu",
        progress=False,
        mosaic=False,
    )
    base.update(changes)
    return TrainConfig(**base)


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]


def events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_validation_each_epoch_keeps_best_and_writes_tensorboard(gaic, val_text, tiny_backbone_dir, tmp_path):
    """6 samples, batch 4: validations at steps 2, 4, 6 (GAIC val and the text set); best/ is the
    step with the highest chosen metric and scores it again when loaded; TensorBoard holds the
    logged losses, learning rate, metrics and preview images; validating changes no weight."""
    from clipcrop.evaluation.harness import evaluate_samples
    from clipcrop.predictor import ClipCrop

    out = tmp_path / "ck"
    train(
        config(gaic, tiny_backbone_dir, out, max_steps=6, val_text=str(val_text), best_metric="iou_top1_best")
    )
    log = read_log(out)
    vals = [r for r in log if r["event"] == "validation"]
    assert [r["step"] for r in vals] == [2, 4, 6]
    for r in vals:
        assert {"acc1_5", "acc1_10", "acc_iou85_top5", "acc_iou90_top10", "iou_top1_best"} <= set(
            r["metrics"]
        )
        assert {"text_iou_mean", "text_iou_max"} <= set(r["metrics"])
        assert r["metrics"]["num_samples"] == len(VAL) and r["metrics"]["text_num_samples"] == len(VAL)
    scores = [r["metrics"]["iou_top1_best"] for r in vals]
    best_step = vals[int(np.argmax(scores))]["step"]  # the first of equal best values
    saved = json.loads((out / "best" / "best.json").read_text())
    assert saved["metric"] == "iou_top1_best" and saved["step"] == best_step
    assert saved["value"] == pytest.approx(max(scores))
    assert [r["improved"] for r in vals][0] is True and vals[-1]["best_step"] == best_step
    # best/ is a checkpoint of its own: it loads, and scores what its validation said
    cc = ClipCrop.from_pretrained(out / "best")
    again = evaluate_samples(cc, load_gaic(gaic.root, "val", gaic.text_dir), "gaic").metrics
    assert again["iou_top1_best"] == pytest.approx(saved["value"], abs=1e-6)
    assert json.loads((out / "best" / "checkpoint.json").read_text())["step"] == best_step

    acc = events(out / "tensorboard")
    steps = [r for r in log if r["event"] == "step"]
    for tag, key in (("loss/loss", "loss"), ("loss/loss_giou", "loss_giou"), ("loss/loss_l1_0", "loss_l1_0")):
        got = acc.Scalars(tag)
        assert [e.step for e in got] == [r["step"] for r in steps]
        np.testing.assert_allclose([e.value for e in got], [r[key] for r in steps], rtol=1e-6)
    np.testing.assert_allclose(
        [e.value for e in acc.Scalars("lr/decoder")], [r["lr"] for r in steps], rtol=1e-6
    )
    for name in ("acc1_5", "iou_top1_best", "text_iou_mean"):
        got = acc.Scalars(f"val/{name}")
        assert [e.step for e in got] == [2, 4, 6]
        np.testing.assert_allclose([e.value for e in got], [r["metrics"][name] for r in vals], rtol=1e-6)
    images = acc.Images("val/crops/0")
    assert [e.step for e in images] == [2, 4, 6] and 0 < max(images[0].width, images[0].height) <= 384
    assert len(acc.Tags()["images"]) == len(VAL)

    plain = tmp_path / "plain"
    train(config(gaic, tiny_backbone_dir, plain, max_steps=6, val_split=None, report_to="none"))
    assert not (plain / "best").exists() and not (plain / "tensorboard").exists()
    wa, wb = load_file(out / "model.safetensors"), load_file(plain / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_validation_settings_are_checked():
    from clipcrop.errors import ParameterError

    with pytest.raises(ParameterError, match="best_metric 'acc'"):
        TrainConfig(best_metric="acc").validate()
    with pytest.raises(ParameterError, match="needs a validation text set"):
        TrainConfig(best_metric="text_iou_mean").validate()
    with pytest.raises(ParameterError, match="report_to"):
        TrainConfig(report_to="wandb").validate()
    assert TrainConfig().chosen_best_metric == "acc1_5"
    assert TrainConfig(val_text="t.json").chosen_best_metric == "text_iou_mean"
