"""Training on a handful of GAIC-format samples made from real photos (tiny random OWL-ViT)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_DECODER
from gaic_fixture import write_gaic
from PIL import Image
from safetensors.torch import load_file

from clipcrop.data.datasets import load_gaic
from clipcrop.errors import DatasetError, ParameterError
from clipcrop.training.checkpoints import publish_checkpoint, recover_checkpoint_dir
from clipcrop.training.config import LOG_FILE, STATE_FILE, TrainConfig
from clipcrop.training.planning import TrainingData
from clipcrop.training.trainer import train

DECODER = {k: v for k, v in TINY_DECODER.items() if k != "input_dim"}


@pytest.fixture(scope="module")
def gaic(tmp_path_factory):
    return write_gaic(tmp_path_factory.mktemp("gaic"))


def config(gaic, backbone_dir, out, **changes) -> TrainConfig:
    base = dict(
        gaic_root=str(gaic.root),
        text_annotations=str(gaic.text_dir),
        backbone=str(backbone_dir),
        out_dir=str(out),
        batch_size=4,
        lr=1e-3,
        decoder=dict(DECODER),
        device="cpu",
        progress=False,
    )
    base.update(changes)
    return TrainConfig(**base)


def read_log(out) -> list[dict]:
    return [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]


def test_training_learns_the_crops(gaic, tiny_backbone_dir, tmp_path):
    """Loss falls and training-set Acc1/5 and top-1 IoU rise far above the untrained decoder."""
    from clipcrop.evaluation.harness import evaluate_samples
    from clipcrop.modeling.model import ClipCropModel
    from clipcrop.predictor import ClipCrop

    out = tmp_path / "ck"
    decoder = {**DECODER, "num_queries": 16}
    # 2e-3: the calibrated backbone's union boxes vary by query, so offsets take longer to fit
    cfg = config(
        gaic, tiny_backbone_dir, out, max_steps=200, lr=2e-3, mosaic=False, text_drop=0.0, decoder=decoder
    )
    result = train(cfg)
    losses = [r["loss"] for r in result.history]
    start, end = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
    assert result.step == 200 and result.finished
    assert end < 0.6 * start, (start, end)

    samples = load_gaic(gaic.root, "train", gaic.text_dir)
    trained = ClipCrop.from_pretrained(out)
    assert trained.mode == "trained" and trained.max_top_k == 16
    torch.manual_seed(0)
    fresh = ClipCropModel(backbone=str(tiny_backbone_dir), decoder={**decoder, "input_dim": 32})
    untrained = ClipCrop(trained.backbone, fresh)
    after = evaluate_samples(trained, samples, "gaic").metrics
    before = evaluate_samples(untrained, samples, "gaic").metrics
    print(
        f"loss {start:.3f} -> {end:.3f}; acc1_5 {before['acc1_5']:.3f} -> {after['acc1_5']:.3f}; "
        f"iou_top1_best {before['iou_top1_best']:.3f} -> {after['iou_top1_best']:.3f}"
    )
    assert after["acc1_5"] >= before["acc1_5"] + 0.5
    assert after["iou_top1_best"] >= before["iou_top1_best"] + 0.3


def test_resume_gives_the_same_weights(gaic, tiny_backbone_dir, tmp_path):
    """12 steps straight vs 5 steps, stop, resume to 12: identical weights and losses. Mosaics,
    text drop, dropout and LR warm-up/cosine are all on, so every saved state matters."""
    decoder = {**DECODER, "dropout": 0.1}
    common = dict(max_steps=12, text_drop=0.3, decoder=decoder, warmup_steps=3)
    a_out, b_out = tmp_path / "a", tmp_path / "b"
    a = train(config(gaic, tiny_backbone_dir, a_out, save_every=5, **common))
    b1 = train(config(gaic, tiny_backbone_dir, b_out, stop_after=5, **common))
    assert b1.step == 5 and not b1.finished
    assert json.loads((b_out / "config.json").read_text())["decoder"]["num_queries"] == DECODER["num_queries"]
    b2 = train(config(gaic, tiny_backbone_dir, b_out, resume=True, **common))
    assert b2.start_step == 5 and b2.step == 12

    wa, wb = load_file(a_out / "model.safetensors"), load_file(b_out / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["loss"] for r in a.history[:5]] == [r["loss"] for r in b1.history]
    assert [r["loss"] for r in a.history[5:]] == [r["loss"] for r in b2.history]
    state_a = torch.load(a_out / STATE_FILE, weights_only=True)
    assert state_a["step"] == 12 and state_a["scheduler"]["last_epoch"] == 12

    # the log of the resumed run continues; every step logs each loss term and the shares
    steps = [r for r in read_log(b_out) if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 13))
    assert [r["event"] for r in read_log(b_out)].count("resume") == 1
    for r in steps:
        assert {"loss", "loss_score", "loss_l1", "loss_giou", "loss_l1_0", "lr", "step_time"} <= set(r)
        assert {"text_drop", "unconditioned", "mosaic"} <= set(r)
    # the logged text-drop and mosaic shares are those of the planned samples
    samples = load_gaic(gaic.root, "train", gaic.text_dir)
    data = TrainingData(samples, config(gaic, tiny_backbone_dir, a_out, **common))
    for r in steps:
        plans = data.plans_for_step(*divmod(r["step"] - 1, data.steps_per_epoch))
        assert r["text_drop"] == pytest.approx(np.mean([p.drop_text for p in plans]))
        assert r["mosaic"] == pytest.approx(np.mean([p.grid > 1 for p in plans]))
    assert 0 < np.mean([r["text_drop"] for r in steps]) < 1
    assert np.mean([r["mosaic"] for r in steps]) > 0


def test_mosaic_plans_and_targets(gaic, tiny_backbone_dir, tmp_path):
    samples = load_gaic(gaic.root, "train", gaic.text_dir)
    cfg = config(gaic, tiny_backbone_dir, tmp_path, text_drop=0.25, seed=3)
    data = TrainingData(samples, cfg, mosaic_max_side=240)
    plans = [p for e in range(80) for s in range(data.steps_per_epoch) for p in data.plans_for_step(e, s)]
    drop = np.mean([p.drop_text for p in plans])
    assert abs(drop - 0.25) < 0.06
    kept = [p for p in plans if not p.drop_text]
    for g in (1, 2, 3):  # single, 2x2, 3x3 with equal probability
        assert abs(np.mean([p.grid == g for p in kept]) - 1 / 3) < 0.06
    assert all(p.grid == 1 for p in plans if p.drop_text)  # no text: nothing tells the tile
    # every epoch visits every sample
    assert sorted({p.sample_index for p in plans[: len(samples)]}) == list(range(len(samples)))

    plan = next(p for p in plans if p.grid == 3 and p.target_tile == 4)
    item = data.build(plan)
    sample = samples[plan.sample_index]
    assert item.caption == sample.caption
    assert [t for i, t in enumerate(plan.tiles) if i != 4] and plan.tiles[4] == plan.sample_index
    assert plan.sample_index not in [t for i, t in enumerate(plan.tiles) if i != 4]
    w, h = item.size
    assert item.image.size == (w, h) and max(w, h) <= 240
    # targets sit in the middle tile: mapping them back gives the sample's own crops
    rect = np.array([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    back = (item.boxes - rect[[0, 1, 0, 1]]) / (rect[[2, 3, 2, 3]] - rect[[0, 1, 0, 1]])
    np.testing.assert_allclose(back, sample.boxes_xyxy_norm(), atol=0.02)
    best = sample.boxes_xyxy_norm()[sample.best_crop_index()]
    np.testing.assert_allclose((item.best_crop - rect[:2].repeat(2)) * 3, best, atol=0.02)
    # ... and the middle tile's pixels are the target photo
    tile = item.image.crop((round(w / 3), round(h / 3), round(2 * w / 3), round(2 * h / 3)))
    photo = Image.open(sample.image_path).convert("RGB").resize(tile.size)
    diff = np.abs(np.asarray(tile, np.float32) - np.asarray(photo, np.float32)).mean()
    assert diff < 12, diff


def test_mosaic_token_selection_is_filtered(gaic, tiny_backbone_dir, tmp_path):
    """In a mosaic, text may only select tokens near the target tile's best crop."""
    from clipcrop.data.mosaic import filter_initial_boxes
    from clipcrop.modeling.backbone import Backbone
    from clipcrop.modeling.model import ClipCropModel
    from clipcrop.training.net import ConditionSpec, TrainNet

    samples = load_gaic(gaic.root, "train", gaic.text_dir)
    cfg = config(gaic, tiny_backbone_dir, tmp_path, seed=1)
    data = TrainingData(samples, cfg)
    backbone = Backbone.from_pretrained(tiny_backbone_dir)
    model = ClipCropModel(backbone=str(tiny_backbone_dir), decoder={**DECODER, "input_dim": 32})
    net = TrainNet(model, backbone, config=cfg)
    plans = [p for e in range(10) for p in data.plans_for_step(e, 0) if p.grid > 1][:4]
    items = [data.build(p) for p in plans]
    feats = backbone.encode(backbone.preprocess([it.image for it in items]), [it.size for it in items])
    embeds = backbone.embed_texts([it.caption for it in items])
    free, masked = [], []
    for i, it in enumerate(items):
        best = torch.as_tensor(it.best_crop)
        free.append(ConditionSpec(embeds[i : i + 1], ["full text"]))
        masked.append(ConditionSpec(embeds[i : i + 1], ["full text"], best))
    out, selections = net([feats[i] for i in range(len(items))], masked)
    assert out["pred_boxes"].shape == (len(items), DECODER["num_queries"], 4)
    _, unfiltered = net([feats[i] for i in range(len(items))], free)
    changed = 0
    for i, (sel, raw) in enumerate(zip(selections, unfiltered, strict=True)):
        mask = filter_initial_boxes(feats.boxes[i], torch.as_tensor(items[i].best_crop), ensure_one=True)
        assert bool(mask[sel.token_indices].all())
        changed += int(not torch.equal(sel.token_indices, raw.token_indices))
    assert changed > 0  # the mask did restrict something


def test_captions_required_unless_base(gaic, tiny_backbone_dir, tmp_path):
    root = tmp_path / "gaic"
    fx = write_gaic(
        root, {"train": ["astronaut.png", "coffee.png", "chelsea.png"]}, drop_captions=("coffee.jpg",)
    )
    cfg = config(fx, tiny_backbone_dir, tmp_path / "ck", max_steps=2)
    with pytest.raises(DatasetError, match="coffee.jpg"):
        train(cfg)
    with pytest.raises(ParameterError, match="text_annotations"):
        train(config(fx, tiny_backbone_dir, tmp_path / "ck", max_steps=2, text_annotations=None))

    out = tmp_path / "base"
    result = train(config(fx, tiny_backbone_dir, out, max_steps=2, variant="base", text_annotations=None))
    assert result.step == 2
    saved = json.loads((out / "config.json").read_text())
    assert saved["selection"]["use_text"] is False and saved["training"]["variant"] == "base"
    steps = [r for r in read_log(out) if r["event"] == "step"]
    assert all(r["unconditioned"] == 1.0 and r["mosaic"] == 0.0 and r["text_drop"] == 0.0 for r in steps)

    # an existing checkpoint is never clobbered by accident
    with pytest.raises(ParameterError, match="resume=True"):
        train(config(fx, tiny_backbone_dir, out, max_steps=2, variant="base"))
    again = train(config(gaic, tiny_backbone_dir, out, max_steps=1, variant="key", overwrite=True))
    assert again.step == 1
    assert json.loads((out / "config.json").read_text())["selection"]["use_full_text"] is False
    assert [r["event"] for r in read_log(out)][0] == "start"  # a fresh log


def test_finetuned_backbone_is_saved_in_the_checkpoint(gaic, tiny_backbone_dir, tmp_path):
    from clipcrop.predictor import ClipCrop

    out = tmp_path / "ft"
    train(
        config(
            gaic, tiny_backbone_dir, out, max_steps=2, mosaic=False, finetune_backbone_lr=1e-3, max_samples=4
        )
    )
    assert (out / "backbone" / "config.json").is_file()
    assert (out / "backbone" / "preprocessor_config.json").is_file()
    assert any((out / "backbone").glob("tokenizer*")) or (out / "backbone" / "vocab.json").is_file()
    log = [r for r in read_log(out) if r["event"] == "step"]
    assert log[-1]["lr_backbone"] > 0
    cc = ClipCrop.from_pretrained(out)
    assert cc.backbone.name.endswith("backbone")
    tuned = cc.backbone.model.state_dict()
    original = load_file(tiny_backbone_dir / "model.safetensors")
    key = next(k for k in original if "vision_model" in k and k.endswith("q_proj.weight"))
    assert not torch.equal(tuned[key], original[key])
    text_key = next(k for k in original if "text_model" in k and k.endswith("q_proj.weight"))
    assert torch.equal(tuned[text_key], original[text_key])  # the text tower stays frozen
    assert len(cc.crop(gaic.root / "images" / "train" / "astronaut.jpg", query="an astronaut")) >= 1

    # resuming continues the fine-tuning (and only that)
    common = dict(max_steps=3, mosaic=False, max_samples=4, resume=True)
    with pytest.raises(ParameterError, match="was trained with backbone fine-tuning; resume it with finetune_backbone_lr"):
        train(config(gaic, tiny_backbone_dir, out, **common))
    assert train(config(gaic, tiny_backbone_dir, out, finetune_backbone_lr=1e-3, **common)).step == 3
    assert not torch.equal(load_file(out / "backbone" / "model.safetensors")[key], tuned[key])


def test_interrupted_checkpoint_swap_is_repaired(tmp_path):
    out = tmp_path / "ck"
    out.mkdir()
    (out / "config.json").write_text("old")
    (out / LOG_FILE).write_text('{"event": "step"}\n')
    tmp = tmp_path / ".ck.tmp-7"
    tmp.mkdir()
    (tmp / "config.json").write_text("new")
    (tmp / ".complete").write_text("7")
    # crashed after moving the log into the new folder and the old folder aside
    (out / LOG_FILE).rename(tmp / LOG_FILE)
    out.rename(tmp_path / ".ck.old-1")
    recover_checkpoint_dir(out)
    assert (out / "config.json").read_text() == "new"
    assert (out / LOG_FILE).is_file() and not (out / ".complete").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]

    # an incomplete temporary folder is discarded; a normal publish keeps non-checkpoint files
    (tmp_path / ".ck.tmp-9").mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "rng_state_1.pt").write_text("stale")
    recover_checkpoint_dir(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    new = tmp_path / ".ck.tmp-10"
    new.mkdir()
    (new / "config.json").write_text("newer")
    publish_checkpoint(new, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(["config.json", LOG_FILE, "notes.txt"])


# ----------------------------------------------------------------------------- runs that cannot lose work


def test_save_defaults_agree_between_cli_and_library():
    from clipcrop.cli import run_flags
    from clipcrop.training import runloop
    from clipcrop.training.finetune_config import FinetuneConfig

    cfg = TrainConfig()
    assert (cfg.save_every, cfg.save_each_epoch, cfg.keep_checkpoints) == (500, True, 3)
    ft = FinetuneConfig(data="m.jsonl", backbone="b", out_dir="o")
    assert (ft.save_every, ft.save_each_epoch, ft.keep_checkpoints) == (500, True, 3)
    assert run_flags.DEFAULT_SAVE_EVERY == runloop.DEFAULT_SAVE_EVERY
    assert run_flags.DEFAULT_KEEP_CHECKPOINTS == runloop.DEFAULT_KEEP_CHECKPOINTS
    with pytest.raises(ParameterError, match="keep_checkpoints"):
        TrainConfig(keep_checkpoints=0).validate()


def test_save_cadence_and_the_last_k_checkpoints(gaic, tiny_backbone_dir, tmp_path):
    """6 samples, batch 4: 2 steps per epoch. save_every 3 and epoch ends save steps 2, 3, 4, 6 and
    the end 7; keep 3 leaves 7 in the folder and 4, 6 in checkpoints/, each loadable, the backbone
    (a sibling folder, named "../owlvit") re-pointed from the new place."""
    import shutil

    from clipcrop.predictor import ClipCrop
    from clipcrop.training.checkpoints import checkpoint_step, history

    backbone = tmp_path / "owlvit"
    shutil.copytree(tiny_backbone_dir, backbone)
    out = tmp_path / "ck"
    result = train(config(gaic, backbone, out, max_steps=7, save_every=3, keep_checkpoints=3))
    assert result.step == 7
    saved = [r["step"] for r in read_log(out) if r["event"] == "checkpoint"]
    assert saved == [2, 3, 4, 6, 7]
    assert json.loads((out / "config.json").read_text())["backbone"] == "../owlvit"
    kept = history(out)
    assert [p.name for p in kept] == ["step-00000004", "step-00000006"]
    assert [checkpoint_step(p) for p in (*kept, out)] == [4, 6, 7]
    latest = load_file(out / "model.safetensors")
    for folder in kept:
        ref = json.loads((folder / "config.json").read_text())["backbone"]
        assert (folder / ref).resolve() == backbone.resolve()
        assert ClipCrop.from_pretrained(folder).mode == "trained"
        weights = load_file(folder / "model.safetensors")
        assert not all(torch.equal(weights[k], latest[k]) for k in latest)
        assert torch.load(folder / STATE_FILE, weights_only=True)["step"] == checkpoint_step(folder)

    # a fresh run over the folder drops the old run's history with its checkpoint
    train(config(gaic, backbone, out, max_steps=1, overwrite=True, keep_checkpoints=1))
    assert history(out) == [] and not (out / "checkpoints").exists()


def test_a_full_disk_keeps_the_last_checkpoint_and_resume_is_exact(
    gaic, tiny_backbone_dir, tmp_path, monkeypatch
):
    import errno

    from clipcrop.errors import DiskFullError

    common = dict(max_steps=4, save_every=2, save_each_epoch=False, text_drop=0.3, warmup_steps=1)
    straight = tmp_path / "straight"
    train(config(gaic, tiny_backbone_dir, straight, **common))

    out = tmp_path / "ck"
    real_save = torch.save

    def full_after_step_2(obj, f, *args, **kwargs):
        if str(f).endswith(STATE_FILE) and obj.get("step", 0) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_after_step_2)
    with pytest.raises(DiskFullError) as info:
        train(config(gaic, tiny_backbone_dir, out, **common))
    message = str(info.value)
    assert "no space left" in message and "step 4" in message
    assert f"the checkpoint of step 2 in {out} is intact" in message and "resume" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "straight"]  # no half-written save
    monkeypatch.setattr(torch, "save", real_save)

    resumed = train(config(gaic, tiny_backbone_dir, out, resume=True, **common))
    assert resumed.start_step == 2 and resumed.step == 4
    wa, wb = load_file(straight / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
