"""Long-run features of ``clipcrop train`` on the GAIC-format fixture (tiny random OWL-ViT):
validation each epoch and ``best/``, TensorBoard events, a killed run resumed, two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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


# ----------------------------------------------------------------------------- the command line


def cli_args(gaic, backbone_dir, out, *extra: str) -> list[str]:
    """``clipcrop train`` on the fixture with the tiny decoder (the other settings: defaults)."""
    sizes = [f"--{k.replace('_', '-')}={v}" for k, v in DECODER.items() if k != "dropout"]
    return [
        *("train", "--gaic-root", str(gaic.root), "--text-annotations", str(gaic.text_dir)),
        *("--backbone", str(backbone_dir), "--out", str(out), "--batch-size", "2", "--lr", "2e-3"),
        *sizes,
        *extra,
    ]


def clipcrop(*argv: str, launcher: tuple[str, ...] = (sys.executable, "-m"), **kwargs):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*launcher, "clipcrop.cli", *argv], env=env, text=True, **kwargs)


def test_a_killed_run_resumes_to_the_same_weights(gaic, tiny_backbone_dir, tmp_path):
    """A run killed (SIGKILL) after a checkpoint, then resumed, ends where the run straight
    through ends: same weights, same best/, every step once in the log and in TensorBoard."""
    args = ("--max-steps", "40", "--save-every", "4", "--quiet")
    straight = tmp_path / "straight"
    done = clipcrop(*cli_args(gaic, tiny_backbone_dir, straight, *args), stderr=subprocess.PIPE)
    assert done.wait(timeout=600) == 0, done.stderr.read()

    out = tmp_path / "killed"
    run = clipcrop(*cli_args(gaic, tiny_backbone_dir, out, *args), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        step = (
            json.loads((out / "checkpoint.json").read_text())["step"]
            if (out / "checkpoint.json").is_file()
            else 0
        )
        if step >= 12:
            run.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert run.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = json.loads((out / "checkpoint.json").read_text())["step"]
    assert 12 <= killed_at < 40

    resumed = clipcrop(*cli_args(gaic, tiny_backbone_dir, out, *args, "--resume"), stderr=subprocess.PIPE)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    for name in ("model.safetensors", "best/model.safetensors"):
        wa, wb = load_file(straight / name), load_file(out / name)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    assert json.loads((out / "best" / "best.json").read_text()) == json.loads(
        (straight / "best" / "best.json").read_text()
    )
    steps = [r["step"] for r in read_log(out) if r["event"] == "step"]
    assert steps[-1] == 40 and sorted(set(steps)) == list(range(1, 41))  # steps after killed_at ran twice
    acc = events(out / "tensorboard")
    assert [e.step for e in acc.Scalars("loss/loss")] == list(range(1, 41))  # purged on resume: once each
    straight_losses = [e.value for e in events(straight / "tensorboard").Scalars("loss/loss")]
    assert [e.value for e in acc.Scalars("loss/loss")] == straight_losses
    vals = [e.step for e in acc.Scalars("val/acc1_5")]
    assert vals == sorted(set(vals)) and vals[-1] == 40  # 3 samples, batch 2: an epoch is 3 steps


def test_dry_run_and_best_from_the_command_line(gaic, tiny_backbone_dir, tmp_path):
    out = tmp_path / "ck"
    dry = clipcrop(
        *cli_args(gaic, tiny_backbone_dir, out, "--dry-run"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = dry.communicate(timeout=600)
    assert dry.returncode == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == "device: cpu (fp32), 1 process(es)"
    assert lines[1] == "samples: 6; steps per epoch: 3; total steps: 90"  # 30 epochs of 3 steps
    assert lines[2].startswith("time per step: ") and lines[3].startswith("peak memory: ")
    assert lines[4].startswith(f"validation: {len(VAL)} samples in ") and lines[5].startswith(
        "estimated run: "
    )
    assert not out.exists()

    run = clipcrop(*cli_args(gaic, tiny_backbone_dir, out, "--max-steps", "6"), stderr=subprocess.PIPE)
    _, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr
    progress = [line for line in stderr.splitlines() if line.startswith("clipcrop: step ")]
    assert len(progress) == 6 and progress[-1].startswith("clipcrop: step 6/6 (100%), loss ")
    image = gaic.root / "images" / "val" / "chelsea.jpg"
    for model in (out, out / "best"):  # crop and evaluate take the latest and the best alike
        crop = clipcrop(
            "crop", str(image), "--query", "a cat", "--model", str(model), "--json", stdout=subprocess.PIPE
        )
        assert crop.wait(timeout=300) == 0 and json.loads(crop.stdout.read())["crops"]
    evaluate = clipcrop(
        *("evaluate", "--dataset", "gaic", "--root", str(gaic.root), "--annotations", str(gaic.text_dir)),
        *("--split", "val", "--model", str(out / "best"), "--json", "--quiet"),
        stdout=subprocess.PIPE,
    )
    assert evaluate.wait(timeout=300) == 0
    best = json.loads((out / "best" / "best.json").read_text())
    assert json.loads(evaluate.stdout.read())["metrics"]["acc1_5"] == pytest.approx(best["metrics"]["acc1_5"])


def test_two_processes_through_torchrun(gaic, tiny_backbone_dir, tmp_path):
    """torchrun starts two processes that Accelerate runs as MULTI_CPU with gloo: each takes its
    share of every global batch, the main one validates, saves and reports; resume works."""
    out = tmp_path / "ddp"
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m")
    run = clipcrop(
        *cli_args(gaic, tiny_backbone_dir, out, "--max-steps", "4", "--device", "cpu", "--quiet"),
        launcher=launcher,
        stderr=subprocess.PIPE,
    )
    _, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr
    start = next(r for r in read_log(out) if r["event"] == "start")
    assert start["processes"] == 2 and start["steps_per_epoch"] == 2  # 6 samples, 2 x 2 per step
    state = torch.load(out / "training_state.pt", weights_only=True)
    assert state["world_size"] == 2 and (out / "rng_state_1.pt").is_file()
    assert [r["step"] for r in read_log(out) if r["event"] == "validation"] == [2, 4]
    assert stderr.count("clipcrop: trained to step 4/4") == 1  # one summary
    again = clipcrop(
        *cli_args(gaic, tiny_backbone_dir, out, "--max-steps", "6", "--device", "cpu", "--quiet", "--resume"),
        launcher=launcher,
        stderr=subprocess.PIPE,
    )
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    assert torch.load(out / "training_state.pt", weights_only=True)["step"] == 6
