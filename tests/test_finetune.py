"""Backbone fine-tuning (``clipcrop finetune-backbone``) on a few synthetic shapes scenes, tiny OWL-ViT."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY_DECODER
from safetensors.torch import load_file

from clipcrop.data.detection import class_key, load_detection_manifest
from clipcrop.errors import DatasetError, ParameterError
from clipcrop.evaluation.detection import top1_box_iou
from clipcrop.modeling.backbone import Backbone
from clipcrop.synthetic.shapes import describe, gaic_annotation, make_scene
from clipcrop.training.detection_heads import HEAD_PRIOR_PROB, heads_saturated, init_detection_heads
from clipcrop.training.detection_loss import DetectionLoss, sigmoid_focal_loss
from clipcrop.training.finetune import finetune_backbone
from clipcrop.training.finetune_config import LOG_FILE, STATE_FILE, FinetuneConfig
from clipcrop.training.matcher import HungarianMatcher


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory):
    """Eight shapes scenes: images, a detection manifest, and a GAIC-format copy."""
    root = tmp_path_factory.mktemp("shapes")
    (root / "img").mkdir()
    lines = []
    captions = {}
    for split in ("train", "test"):
        (root / "gaic" / "images" / split).mkdir(parents=True)
        (root / "gaic" / "annotations" / split).mkdir(parents=True)
    for i in range(8):
        scene = make_scene(i, seed=5)
        scene.image.save(root / "img" / f"s{i}.png")
        objects = [
            {"box": list(o.box), "text": o.text("a" if k % 2 else "the")} for k, o in enumerate(scene.objects)
        ]
        lines.append(json.dumps({"image": f"img/s{i}.png", "objects": objects}))
        split = "train" if i < 6 else "test"
        scene.image.save(root / "gaic" / "images" / split / f"s{i}.jpg")
        boxes, mos = gaic_annotation(scene, [0], np.random.default_rng(i), n_best=6, n_rest=10)
        rows = [
            f"{b[1]:.0f} {b[0]:.0f} {b[3]:.0f} {b[2]:.0f} {m:.2f}" for b, m in zip(boxes, mos, strict=True)
        ]
        (root / "gaic" / "annotations" / split / f"s{i}.txt").write_text("\n".join(rows) + "\n")
        captions.setdefault(split, {})[f"s{i}.jpg"] = describe(scene, [0])
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    (root / "text").mkdir()
    for split, name in (("train", "train"), ("test", "test")):
        (root / "text" / f"{name}.json").write_text(json.dumps(captions[split]))
    (root / "text" / "valid.json").write_text("{}")
    return root


def cfg(scenes_dir, backbone, out, **changes) -> FinetuneConfig:
    base = dict(
        data=str(scenes_dir / "train.jsonl"),
        backbone=str(backbone),
        out_dir=str(out),
        batch_size=4,
        lr=2e-3,
        warmup_steps=5,
        device="cpu",
        progress=False,
    )
    base.update(changes)
    return FinetuneConfig(**base)


def read_log(out) -> list[dict]:
    return [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]


# ----------------------------------------------------------------------------- data


def test_class_key_merges_articles_and_case():
    assert (
        class_key("A Red  Circle") == class_key("the red circle") == class_key("red circle") == "red circle"
    )
    assert class_key("an apple") == "apple"
    assert class_key("theatre") == "theatre"


def test_manifest_is_read_relative_to_its_folder(scenes_dir):
    samples = load_detection_manifest(scenes_dir / "train.jsonl")
    assert len(samples) == 8
    s = samples[0]
    assert s.image_path.is_file() and (s.width, s.height) == (384, 384)
    assert s.boxes_xyxy_px.shape == (len(s.texts), 4)
    assert all(t.endswith(("circle", "square", "triangle", "star", "ring")) for t in s.texts)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"objects": []}', "expected"),
        (
            '{"image": "img/s0.png", "objects": [{"box": [1, 2, 3], "text": "x"}]}',
            "box 0 must be 4 finite numbers",
        ),
        ('{"image": "img/s0.png", "objects": [{"box": [10, 10, 5, 20], "text": "x"}]}', "empty"),
        ('{"image": "img/s0.png", "objects": [{"box": [0, 0, 999, 20], "text": "x"}]}', "outside"),
        ('{"image": "img/s0.png", "objects": [{"box": [0, 0, 9, 20], "text": " "}]}', "text"),
        ('{"image": "img/missing.png", "objects": []}', "not found"),
    ],
)
def test_manifest_errors_name_the_line(scenes_dir, tmp_path, line, message):
    manifest = scenes_dir / f"bad_{abs(hash(line))}.jsonl"
    manifest.write_text('{"image": "img/s1.png", "objects": []}\n' + line + "\n")
    with pytest.raises(DatasetError, match=message) as info:
        load_detection_manifest(manifest)
    assert f"{manifest.name}:2" in str(info.value)
    with pytest.raises(DatasetError, match="not found"):
        load_detection_manifest(tmp_path / "nope.jsonl")


def test_other_texts_are_read_cleaned_and_checked(scenes_dir):
    manifest = scenes_dir / "other_texts.jsonl"
    objects = [
        {
            "box": [0, 0, 50, 40],
            "text": "a red circle",
            "other_texts": ["a red  shape", "the circle", "circle"],
        },
        {"box": [60, 0, 90, 40], "text": "a blue star", "other_texts": ["The blue star", "a star"]},
        {"box": [0, 50, 30, 90], "text": "a green ring"},
    ]
    manifest.write_text(json.dumps({"image": "img/s0.png", "objects": objects}) + "\n")
    (s,) = load_detection_manifest(manifest)
    # whitespace collapsed; a repeat of its own class or of another name dropped
    assert s.other_texts == (("a red shape", "the circle"), ("a star",), ())
    plain = load_detection_manifest(scenes_dir / "train.jsonl")[0]
    assert plain.other_texts == tuple(() for _ in plain.texts)
    for bad in ("a circle", [""], [3]):
        objects[0]["other_texts"] = bad
        manifest.write_text(json.dumps({"image": "img/s0.png", "objects": objects}) + "\n")
        with pytest.raises(DatasetError, match="object 0's 'other_texts' must be a list"):
            load_detection_manifest(manifest)


def test_an_object_is_a_positive_for_its_other_names_never_their_negative(
    scenes_dir, tiny_backbone_dir, tmp_path
):
    """With attribute names ("a red shape", "a circle"), the red circle's row is true in the
    columns of "red circle", "red shape" and "circle" and false elsewhere; a name some object of
    the batch carries is never drawn as a negative query."""
    from clipcrop.training.finetune import Finetuner

    lines = []
    for line in (scenes_dir / "train.jsonl").read_text().splitlines():
        entry = json.loads(line)
        for o in entry["objects"]:
            colour, shape = class_key(o["text"]).split()
            o["other_texts"] = [f"a {colour} shape", f"a {shape}"]
        lines.append(json.dumps(entry))
    manifest = scenes_dir / "attributes.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    config = cfg(scenes_dir, tiny_backbone_dir, tmp_path / "a", data=str(manifest), hflip=False, batch_size=3)
    ft = Finetuner(replace(config, num_negatives=200))
    for step in range(3):
        batch = ft.data.batch(step, 96)
        keys = [class_key(t) for t in batch.texts]  # "a X" and "the X" may both be queries
        named = set()
        for i, target in zip(ft.data.step_plan(step).indices, batch.targets, strict=True):
            s = ft.samples[i]
            for label, row in zip(target["labels"], target["classes"], strict=True):
                k = s.texts.index(batch.texts[int(label)])
                colour, shape = class_key(s.texts[k]).split()
                expected = {f"{colour} {shape}", f"{colour} shape", shape}
                assert {keys[c] for c in torch.nonzero(row).flatten().tolist()} == expected
                named |= expected
        # every name of the batch is a query; every other query is a class no object has
        assert named <= set(keys)
        negatives = set(keys) - named
        assert negatives and all(k in ft.data.vocab for k in negatives)
        assert {"red shape", "circle"} <= set(ft.data.vocab) | named


def test_zoom_windows_cut_no_object_and_targets_follow(scenes_dir, tiny_backbone_dir, tmp_path):
    from clipcrop.training.finetune import Finetuner

    ft = Finetuner(cfg(scenes_dir, tiny_backbone_dir, tmp_path / "z", zoom=1.0, hflip=False, batch_size=8))
    windows = ft.data.step_plan(0).windows
    assert sum(w is not None for w in windows) >= 6
    batch = ft.data.batch(0, 96)
    images, texts, targets = batch.images, batch.texts, batch.targets
    idx = ft.data.step_plan(0).indices
    for i, window, image, target in zip(idx, windows, images, targets, strict=True):
        if window is None:
            continue
        s = ft.samples[i]
        side = window[2] - window[0]
        assert 0.4 <= side <= 1.0 and window.min() >= 0 and window.max() <= 1
        assert image.width == pytest.approx(side * s.width, abs=1.5)  # cut from the full image
        assert 1 <= len(target["boxes"]) <= len(s.texts)
        # each kept object: its box, relative to the window
        for box_c, label in zip(target["boxes"], target["labels"], strict=True):
            k = s.texts.index(texts[int(label)])
            # (at least 90% of it is inside; the rest is clipped off)
            x0, y0, x1, y1 = np.clip(
                s.boxes_xyxy_px[k] / s.width, np.tile(window[:2], 2), np.tile(window[2:], 2)
            )
            expected = torch.tensor(
                [
                    ((x0 + x1) / 2 - window[0]) / side,
                    ((y0 + y1) / 2 - window[1]) / side,
                    (x1 - x0) / side,
                    (y1 - y0) / side,
                ],
                dtype=torch.float32,
            )
            torch.testing.assert_close(box_c, expected, atol=0.02, rtol=0)


# ----------------------------------------------------------------------------- loss


def test_focal_loss_matches_its_formula():
    logits = torch.tensor([2.0, -1.0, 0.5])
    targets = torch.tensor([1.0, 0.0, 0.0])
    p = torch.sigmoid(logits)
    expected = torch.stack(
        [
            -0.25 * (1 - p[0]) ** 2 * torch.log(p[0]),
            -0.75 * p[1] ** 2 * torch.log(1 - p[1]),
            -0.75 * p[2] ** 2 * torch.log(1 - p[2]),
        ]
    )
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, 0.25, 2.0), expected)


class SpyMatcher(HungarianMatcher):
    def __init__(self):
        super().__init__(2.0, 5.0, 2.0)
        self.calls = []

    def forward(self, outputs, targets):
        self.calls.append((outputs, targets))
        return super().forward(outputs, targets)


def test_loss_matches_tokens_to_objects_with_the_class_aware_matcher():
    # tokens 0 and 1 have the object's exact box; only token 1 is confident about its class (0)
    box = [0.2, 0.2, 0.6, 0.6]
    boxes = torch.tensor([[box, box, [0.7, 0.7, 0.9, 0.9]]])
    logits = torch.tensor([[[-5.0, 3.0], [3.0, -5.0], [-5.0, -5.0]]])
    target = {
        "boxes": torch.tensor([[0.4, 0.4, 0.4, 0.4]]),  # cxcywh of `box`
        "labels": torch.tensor([0]),
        "classes": torch.tensor([[True, False]]),
    }
    spy = SpyMatcher()
    loss = DetectionLoss(spy, {"loss_focal": 2.0, "loss_l1": 5.0, "loss_giou": 2.0})
    out = loss(logits, boxes, [target])
    outputs, targets = spy.calls[0]
    assert outputs["pred_class_logits"] is logits and torch.equal(targets[0]["labels"], torch.tensor([0]))
    assert float(out["loss_l1"]) == pytest.approx(0.0, abs=1e-6)
    assert float(out["loss_giou"]) == pytest.approx(0.0, abs=1e-6)
    # token 1 was matched (class cost decided between two perfect boxes): its target is 1 for
    # class 0, everything else 0; so the focal loss is small. Matching token 0 would make it large.
    expected = sigmoid_focal_loss(
        logits, torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]]), 0.25, 2.0
    ).sum()
    assert float(out["loss_focal"]) == pytest.approx(float(expected), rel=1e-5)
    total = loss.total(out)
    assert float(total) == pytest.approx(2.0 * float(out["loss_focal"]), rel=1e-5)


def test_loss_without_objects_is_finite_and_differentiable():
    boxes = torch.rand(2, 5, 4).sort(dim=-1).values.requires_grad_(True)
    logits = torch.randn(2, 5, 3, requires_grad=True)
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "classes": torch.zeros(0, 3, dtype=torch.bool),
    }
    out = DetectionLoss(HungarianMatcher(), {"loss_focal": 1.0, "loss_l1": 1.0, "loss_giou": 1.0})(
        logits, boxes, [empty, empty]
    )
    total = out["loss_focal"] + out["loss_l1"] + out["loss_giou"]
    assert math.isfinite(float(total.detach()))
    total.backward()
    assert logits.grad is not None


# ----------------------------------------------------------------------------- heads


def test_text_features_are_the_cached_embeddings_with_gradients(tiny_backbone_dir):
    """Fine-tuning trains through Backbone.text_features; the predictor's cached embed_texts is
    the same call without gradients, so the two agree exactly."""
    backbone = Backbone.from_pretrained(tiny_backbone_dir)
    backbone.model.requires_grad_(True)  # loaded frozen for inference; fine-tuning unfreezes it
    texts = ["a red circle", "the blue star and a white ring"]
    with_grad = backbone.text_features(texts)
    assert with_grad.requires_grad
    with_grad.sum().backward()
    assert backbone.model.owlvit.text_projection.weight.grad is not None
    assert torch.equal(with_grad.detach().float().cpu(), backbone.embed_texts(texts))


def test_random_heads_saturate_and_fresh_heads_do_not(tmp_path):
    # raw random heads, as a model trained from scratch starts (the shared fixtures are calibrated)
    from conftest import DATA

    from clipcrop.synthetic.random_models import make_random_owlvit

    bb = Backbone.from_pretrained(make_random_owlvit(tmp_path / "raw", DATA, size="tiny", seed=0))
    pixels = torch.randn(2, 3, bb.preprocessing.size, bb.preprocessing.size)
    assert heads_saturated(bb.model, pixels)  # transformers' default init: boxes cannot learn
    init_detection_heads(bb.model)
    assert not heads_saturated(bb.model, pixels)
    feats = bb.encode(pixels)
    probs = torch.sigmoid(feats.logits(torch.randn(4, feats.class_embeds.shape[-1])))
    # logits = (cosine - shift) * 5 start around the focal-loss prior, whatever the query
    assert float(probs.max()) < 0.3 and float(probs.median()) == pytest.approx(HEAD_PRIOR_PROB, rel=0.5)
    # every token starts at its own patch (OWL-ViT's box prior)
    widths = feats.boxes[..., 2] - feats.boxes[..., 0]
    side = bb.preprocessing.size // bb.model.config.vision_config.patch_size
    torch.testing.assert_close(widths.median(), torch.tensor(1.0 / side), atol=0.02, rtol=0)


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def raw_backbone_dir(tmp_path_factory):
    """Fine-tuning starts from scratch here, as the shapes benchmark does: raw random heads (the
    shared fixtures are calibrated to behave like pretrained ones; these get re-initialised)."""
    from conftest import DATA

    from clipcrop.synthetic.random_models import make_random_owlvit

    return make_random_owlvit(tmp_path_factory.mktemp("raw-owlvit"), DATA, size="tiny", seed=0)


@pytest.fixture(scope="module")
def finetuned(scenes_dir, raw_backbone_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "owlvit-shapes"
    result = finetune_backbone(cfg(scenes_dir, raw_backbone_dir, out, max_steps=150, batch_size=8))
    return out, result


def test_finetuning_learns_to_find_objects_by_text(finetuned, scenes_dir, raw_backbone_dir):
    out, result = finetuned
    assert result.finished and result.step == 150 and result.start_step == 0
    losses = [r["loss"] for r in result.history]
    assert np.mean(losses[-15:]) < 0.5 * np.mean(losses[:15])
    samples = load_detection_manifest(scenes_dir / "train.jsonl")
    before = top1_box_iou(Backbone.from_pretrained(raw_backbone_dir), samples)
    after = top1_box_iou(Backbone.from_pretrained(out), samples)
    assert after["num_objects"] == before["num_objects"] > 10
    assert after["iou_mean"] > before["iou_mean"] + 0.3
    assert after["hit_rate"] > 0.6


def test_log_has_every_loss_term(finetuned):
    out, result = finetuned
    log = read_log(out)
    assert log[0]["event"] == "start" and log[0]["config"]["max_steps"] == 150
    steps = [r for r in log if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 151))
    for key in ("loss", "loss_focal", "loss_l1", "loss_giou", "lr", "num_objects", "num_queries"):
        assert all(math.isfinite(r[key]) for r in steps), key
    assert log[-1]["event"] == "end"


def test_output_is_an_ordinary_owlvit_folder(finetuned, raw_backbone_dir, scenes_dir):
    from clipcrop import ClipCrop

    out, _ = finetuned
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    support = sorted(
        p.name for p in raw_backbone_dir.iterdir() if p.name not in ("config.json", "model.safetensors")
    )
    assert "preprocessor_config.json" in support and "tokenizer_config.json" in support
    for name in support:  # tokenizer and image processor: exactly what the input folder had
        assert (out / name).read_bytes() == (raw_backbone_dir / name).read_bytes(), name
    assert not list(out.parent.glob(".owlvit-shapes.*")), "temporary folders left behind"
    cc = ClipCrop.from_pretrained(out)
    assert cc.mode == "training-free"
    crops = cc.crop(scenes_dir / "img" / "s0.png", query="the red circle", top_k=2)
    assert 1 <= len(crops) <= 2


def test_clipcrop_trains_on_the_finetuned_backbone(finetuned, scenes_dir, tmp_path):
    from clipcrop import ClipCrop
    from clipcrop.training.config import TrainConfig
    from clipcrop.training.trainer import train

    out, _ = finetuned
    decoder = {k: v for k, v in TINY_DECODER.items() if k != "input_dim"}
    result = train(
        TrainConfig(
            gaic_root=str(scenes_dir / "gaic"),
            text_annotations=str(scenes_dir / "text"),
            backbone=str(out),
            out_dir=str(tmp_path / "cc"),
            max_steps=2,
            batch_size=2,
            decoder=decoder,
            device="cpu",
            progress=False,
        )
    )
    assert result.step == 2
    cc = ClipCrop.from_pretrained(tmp_path / "cc")
    assert cc.mode == "trained" and cc.backbone.hidden_size == TINY_DECODER["input_dim"]


def test_resume_continues_exactly(scenes_dir, tiny_backbone_dir, tmp_path):
    straight = tmp_path / "straight"
    finetune_backbone(cfg(scenes_dir, tiny_backbone_dir, straight, max_steps=6, save_every=2))
    split = tmp_path / "split"
    first = finetune_backbone(cfg(scenes_dir, tiny_backbone_dir, split, max_steps=6, stop_after=3))
    assert first.step == 3 and not first.finished
    with pytest.raises(ParameterError, match="already holds a checkpoint"):
        finetune_backbone(cfg(scenes_dir, tiny_backbone_dir, split, max_steps=6))
    second = finetune_backbone(cfg(scenes_dir, tiny_backbone_dir, split, max_steps=6, resume=True))
    assert second.start_step == 3 and second.step == 6 and second.finished
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(split / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    losses_a = [r["loss"] for r in read_log(straight) if r["event"] == "step"]
    losses_b = [r["loss"] for r in read_log(split) if r["event"] == "step"]
    assert losses_a == losses_b
    state = torch.load(split / STATE_FILE, weights_only=True)
    assert state["step"] == 6 and state["optimizer"]["state"]


def test_resume_with_more_steps_extends_the_schedule(scenes_dir, tiny_backbone_dir, tmp_path):
    from clipcrop.training.schedule import LRSchedule

    out = tmp_path / "extend"
    finetune_backbone(cfg(scenes_dir, tiny_backbone_dir, out, max_steps=4))
    more = finetune_backbone(cfg(scenes_dir, tiny_backbone_dir, out, max_steps=8, resume=True))
    assert more.start_step == 4 and more.step == 8
    schedule = LRSchedule("cosine", 8, 5)
    # the first resumed step already runs on the longer schedule (lr logged after the step)
    assert [r["lr"] for r in more.history] == pytest.approx([2e-3 * schedule(s) for s in range(5, 9)])


def test_bad_settings_are_refused(scenes_dir, tiny_backbone_dir, tmp_path):
    for changes in (
        {"batch_size": 0},
        {"lr": 0.0},
        {"lr_schedule": "steps"},
        {"reinit_heads": "maybe"},
        {"max_steps": 0},
        {"resume": True, "overwrite": True},
    ):
        with pytest.raises(ParameterError):
            cfg(scenes_dir, tiny_backbone_dir, tmp_path / "x", **changes).validate()
    with pytest.raises(ParameterError, match="cannot resume"):
        finetune_backbone(cfg(scenes_dir, tiny_backbone_dir, tmp_path / "none", max_steps=2, resume=True))


def test_cli_finetunes_and_resumes(scenes_dir, tiny_backbone_dir, tmp_path, capsys):
    from clipcrop.cli.main import main

    out = tmp_path / "cli"
    args = [
        "finetune-backbone",
        "--data",
        str(scenes_dir / "train.jsonl"),
        "--backbone",
        str(tiny_backbone_dir),
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--cpu",
        "--quiet",
    ]
    assert main([*args, "--max-steps", "3", "--stop-after", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert "fine-tuned to step 2/3" in captured.err and "loss_focal" in captured.err
    assert main([*args, "--max-steps", "3"]) == 1
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert main([*args, "--max-steps", "3", "--resume"]) == 0
    assert "step 3/3" in capsys.readouterr().err
    assert (
        main(
            [
                "finetune-backbone",
                "--data",
                str(tmp_path / "missing.jsonl"),
                "--backbone",
                str(tiny_backbone_dir),
                "--out",
                str(tmp_path / "o2"),
            ]
        )
        == 2  # a usage error, found before torch is imported
    )
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["finetune-backbone", "--data", "x", "--out", "y", "--epochs", "2", "--max-steps", "3"])
    assert info.value.code == 2


def test_finetuning_writes_tensorboard_events(scenes_dir, tiny_backbone_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    result = finetune_backbone(cfg(scenes_dir, tiny_backbone_dir, out, max_steps=3))
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    for tag, key in (("loss/loss_focal", "loss_focal"), ("loss/loss", "loss"), ("lr/backbone", "lr")):
        got = acc.Scalars(tag)
        assert [e.step for e in got] == [1, 2, 3]
        np.testing.assert_allclose([e.value for e in got], [r[key] for r in result.history], rtol=1e-6)
    assert "data/num_queries" in acc.Tags()["scalars"]
    assert not (tmp_path / "none").exists()
    finetune_backbone(cfg(scenes_dir, tiny_backbone_dir, tmp_path / "none", max_steps=1, report_to="none"))
    assert not (tmp_path / "none" / "tensorboard").exists()
