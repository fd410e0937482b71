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


def test_a_dry_run_measures_and_writes_nothing(gaic, tiny_backbone_dir, tmp_path):
    from clipcrop.training.trainer import Trainer

    out = tmp_path / "never"
    report = Trainer(config(gaic, tiny_backbone_dir, out, epochs=30)).dry_run(steps=3)
    assert not out.exists()
    assert (report.samples, report.steps_per_epoch, report.total_steps) == (6, 2, 60)
    assert (report.steps, report.processes, report.device, report.precision) == (3, 1, "cpu", "no")
    assert 0 < report.step_s <= report.wall_step_s and report.first_step_s > 0
    assert report.peak_memory_mb > 100 and report.memory_kind == "process peak resident memory"
    assert report.validation_samples == len(VAL) and report.validation_s > 0
    # 60 steps at the wall time per step, and a validation for each of the 30 epochs
    assert report.estimated_s == pytest.approx(60 * report.wall_step_s + 30 * report.validation_s)
    lines = report.lines()
    assert lines[1] == "samples: 6; steps per epoch: 2; total steps: 60"
    assert lines[0] == "device: cpu (fp32), 1 process(es)" and lines[-1].startswith("estimated run: ")


def test_devices_and_precision(gaic, tiny_backbone_dir, tmp_path):
    """auto, cpu, cuda and cuda:N are the devices; without a GPU, CUDA and fp16 are refused
    before anything loads; bf16 autocast trains on the CPU."""
    from clipcrop.errors import ParameterError

    for device in ("auto", "cpu", "cuda", "cuda:1"):
        TrainConfig(device=device).validate()
    with pytest.raises(ParameterError, match="not auto, cpu, cuda or cuda:N"):
        TrainConfig(device="gpu").validate()
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA GPU is available"):
            train(config(gaic, tiny_backbone_dir, tmp_path / "c", max_steps=1, device="cuda:0"))
        with pytest.raises(ParameterError, match="fp16 needs a CUDA GPU"):
            train(
                config(
                    gaic,
                    tiny_backbone_dir,
                    tmp_path / "f",
                    max_steps=1,
                    device="auto",
                    mixed_precision="fp16",
                )
            )
        assert not (tmp_path / "c").exists() and not (tmp_path / "f").exists()
    out = tmp_path / "bf16"
    result = train(config(gaic, tiny_backbone_dir, out, max_steps=2, mixed_precision="bf16", val_split=None))
    assert result.step == 2 and all(np.isfinite(r["loss"]) for r in result.history)
    fp32 = train(config(gaic, tiny_backbone_dir, tmp_path / "fp32", max_steps=2, val_split=None))
    assert result.history[0]["loss"] != fp32.history[0]["loss"]  # autocast did run in bf16
    assert torch.load(out / "training_state.pt", weights_only=True)["config"]["mixed_precision"] == "bf16"
