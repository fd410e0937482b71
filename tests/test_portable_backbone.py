"""Portable checkpoints: a trained checkpoint names its backbone relative to itself, survives being
moved together with it, and says how to point at the backbone (``--backbone``) when it cannot find it;
``--backbone`` works on every command that loads a model (crop, detect, serve, batch, evaluate)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import TINY_DECODER, sample_photo
from gaic_fixture import write_gaic
from test_cli import run_cli
from test_cli_detect import assert_same_crops, assert_same_detections

from clipcrop.errors import BackboneLoadError, ModelLoadError
from clipcrop.predictor import ClipCrop

PHOTO = sample_photo("coffee.png")
DECODER = {k: v for k, v in TINY_DECODER.items() if k != "input_dim"}


def build_pair(backbone_dir: Path, root: Path) -> Path:
    """``root/owlvit`` (a copy of ``backbone_dir``) and ``root/ckpt``, a seeded tiny checkpoint that
    names it as training does (:func:`clipcrop.modeling.model.portable_backbone_ref`)."""
    import torch

    from clipcrop.modeling.model import ClipCropModel, portable_backbone_ref

    shutil.copytree(backbone_dir, root / "owlvit")
    torch.manual_seed(0)
    ref = portable_backbone_ref(str(root / "owlvit"), root / "ckpt")
    ClipCropModel(backbone=ref, decoder=TINY_DECODER).save_pretrained(root / "ckpt")
    return root / "ckpt"


def crops(cc: ClipCrop) -> list:
    return cc.crop(PHOTO, query="a cup of coffee", top_k=3).to_dict()["crops"]


@pytest.fixture(scope="module")
def moved(tiny_backbone_dir, tmp_path_factory):
    """A checkpoint and its sibling backbone moved together, then the backbone alone moved away.

    Returns ``(checkpoint, old backbone path, new backbone path, crops before any move)``.
    """
    base = tmp_path_factory.mktemp("portable")
    ckpt = build_pair(tiny_backbone_dir, base / "first")
    assert json.loads((ckpt / "config.json").read_text())["backbone"] == "../owlvit"
    before = crops(ClipCrop.from_pretrained(ckpt))
    shutil.move(base / "first", base / "second")  # both folders, together
    ckpt = base / "second" / "ckpt"
    cc = ClipCrop.from_pretrained(ckpt)
    assert Path(cc.backbone.name) == (base / "second" / "owlvit").resolve()
    assert crops(cc) == before
    away = base / "elsewhere" / "owlvit-moved"
    away.parent.mkdir()
    shutil.move(base / "second" / "owlvit", away)  # the backbone alone
    return ckpt, base / "second" / "owlvit", away, before


def test_moving_only_the_backbone_names_checkpoint_backbone_and_the_flag(moved):
    ckpt, old, away, before = moved
    with pytest.raises(ModelLoadError) as err:
        ClipCrop.from_pretrained(ckpt)
    message = str(err.value)
    assert str(ckpt) in message and str(old.resolve()) in message
    # the library names its parameter; the CLI and the service their own spellings (tests below)
    assert isinstance(err.value, BackboneLoadError) and "--backbone" not in message and "backbone=" in message
    assert crops(ClipCrop.from_pretrained(ckpt, backbone=away)) == before


def test_crop_and_detect_cli_take_backbone(moved):
    ckpt, old, away, before = moved
    r = run_cli("crop", str(PHOTO), "-q", "a cup of coffee", "-k", "3", "--json", "--model", str(ckpt))
    assert r.returncode == 1
    errors = r.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("clipcrop: error: checkpoint"), r.stderr
    assert str(ckpt) in errors[0] and str(old.resolve()) in errors[0] and "--backbone" in errors[0]

    args = ("-q", "a cup of coffee", "-k", "3", "--json", "--model", str(ckpt), "--backbone", str(away))
    r = run_cli("crop", str(PHOTO), *args)
    assert r.returncode == 0, r.stderr
    assert_same_crops(json.loads(r.stdout)["crops"], before)
    r = run_cli("detect", str(PHOTO), *args)
    assert r.returncode == 0, r.stderr
    free = ClipCrop.from_pretrained(away)  # detections are the backbone's own
    assert_same_detections(
        json.loads(r.stdout), free.detect(str(PHOTO), query="a cup of coffee", top_k=3).to_dict()
    )

    r = run_cli("crop", str(PHOTO), "--model", str(ckpt), "--backbone", str(old))
    assert r.returncode == 2 and r.stderr == f"clipcrop: error: {old}: no such folder\n"


def test_evaluate_takes_backbone(moved, tmp_path, capsys):
    from clipcrop.cli.main import main
    from clipcrop.evaluation.harness import EvalConfig, evaluate_samples, load_samples

    ckpt, _, away, _ = moved
    gaic = write_gaic(tmp_path / "gaic", {"test": ["coffee.png", "astronaut.png"]})
    argv = ["evaluate", "--dataset", "gaic", "--root", str(gaic.root), "--model", str(ckpt), "--json"]
    assert main([*argv, "--quiet"]) == 1
    assert "--backbone" in capsys.readouterr().err
    assert main([*argv, "--quiet", "--backbone", str(away)]) == 0
    got = json.loads(capsys.readouterr().out)
    samples = load_samples(EvalConfig(dataset="gaic", root=str(gaic.root)))
    expected = evaluate_samples(ClipCrop.from_pretrained(ckpt, backbone=away), samples, "gaic")
    assert got["samples"] == 2 and got["metrics"] == pytest.approx(expected.to_json()["metrics"])


def test_serve_takes_backbone(moved, monkeypatch):
    """``serve --backbone`` reaches every worker's loader (through CLIPCROP_BACKBONE)."""
    from fastapi.testclient import TestClient

    from clipcrop.cli import serve as cli_serve
    from clipcrop.cli.main import main
    from clipcrop.serve.app import app_from_env
    from clipcrop.settings import ENV_BACKBONE

    ckpt, _, away, before = moved
    for name in ("CLIPCROP_MODEL", ENV_BACKBONE, "CLIPCROP_DEVICE", "CLIPCROP_PRECISION"):
        monkeypatch.setenv(name, "")  # restored afterwards: serve writes its settings into os.environ
    seen = {}
    monkeypatch.setattr(cli_serve, "_serve_one", lambda common: seen.update(os.environ) or 0)
    assert main(["serve", "--model", str(ckpt), "--backbone", str(away)]) == 0
    assert seen["CLIPCROP_MODEL"] == str(ckpt) and seen[ENV_BACKBONE] == str(away)
    with TestClient(app_from_env()) as client:
        for _ in range(600):
            if client.get("/ready").status_code == 200:
                break
            time.sleep(0.05)
        r = client.post(
            "/v1/crop",
            files={"image": ("coffee.png", PHOTO.read_bytes())},
            data={"query": "a cup of coffee", "top_k": "3"},
        )
    assert r.status_code == 200, r.text
    assert r.json()["crops"] == before


def test_batch_takes_backbone(moved, monkeypatch, tmp_path):
    """``batch --backbone`` reaches the config and the Ray workers' model loading."""
    from clipcrop.batch import driver
    from clipcrop.batch.config import BatchSummary
    from clipcrop.batch.worker import CropWorker
    from clipcrop.cli.main import main
    from clipcrop.limits import Limits

    ckpt, _, away, before = moved
    configs = []
    monkeypatch.setattr(driver, "run_batch", lambda config: configs.append(config) or BatchSummary(out=""))
    main(
        [
            "batch",
            str(PHOTO),
            "--out",
            str(tmp_path / "r.jsonl"),
            "--model",
            str(ckpt),
            "--backbone",
            str(away),
        ]
    )
    assert configs and configs[0].backbone == str(away) and configs[0].model == str(ckpt)
    worker = CropWorker(
        model=str(ckpt), device="cpu", precision="fp32", quantize=None, limits=Limits(), top_k=3,
        aspect_ratio=None, backbone=str(away),
    )  # fmt: skip
    assert worker.cc.mode == "trained" and Path(worker.cc.backbone.name) == away


def train_once(gaic, backbone: Path, out: Path, **changes):
    from clipcrop.training.config import TrainConfig
    from clipcrop.training.trainer import train

    config = TrainConfig(
        gaic_root=str(gaic.root),
        text_annotations=str(gaic.text_dir),
        backbone=str(backbone),
        out_dir=str(out),
        max_steps=1,
        batch_size=2,
        max_samples=2,
        mosaic=False,
        decoder=dict(DECODER),
        device="cpu",
        progress=False,
        **changes,
    )
    train(config)
    return json.loads((out / "config.json").read_text())["backbone"]


def test_training_writes_portable_backbone_refs(tiny_backbone_dir, tmp_path):
    gaic = write_gaic(tmp_path / "gaic", {"train": ["coffee.png", "astronaut.png"]})
    shutil.copytree(tiny_backbone_dir, tmp_path / "models" / "owlvit")
    sibling = tmp_path / "models" / "owlvit"
    assert train_once(gaic, sibling, tmp_path / "models" / "ck") == "../owlvit"
    # elsewhere on disk: absolute, so that moving the checkpoint alone cannot break it
    far = train_once(gaic, sibling, tmp_path / "runs" / "deep" / "ck")
    assert far == str(sibling.resolve())
    # fine-tuned with the decoder: saved inside, named "backbone"
    tuned = tmp_path / "models" / "tuned"
    assert train_once(gaic, sibling, tuned, finetune_backbone_lr=1e-4) == "backbone"
    shutil.move(tmp_path / "models", tmp_path / "moved")
    for name in ("ck", "tuned"):
        cc = ClipCrop.from_pretrained(tmp_path / "moved" / name)
        assert cc.mode == "trained" and Path(cc.backbone.name).resolve().is_relative_to(tmp_path / "moved")
