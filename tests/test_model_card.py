"""The checkpoint's model card names the paper, the model, its training data and settings, and its
evaluation results once evaluated; never huggingface_hub's "[More Information Needed]"."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import TINY_DECODER
from gaic_fixture import write_gaic

from clipcrop.modeling.model import ClipCropModel
from clipcrop.modeling.model_card import PAPER_URL, weights_digest

PAPER = "ClipCrop: Conditioned Cropping Driven by Vision-Language Model"


def card(folder) -> str:
    return (folder / "README.md").read_text(encoding="utf-8")


def assert_complete(text: str) -> None:
    assert "[More Information Needed]" not in text
    assert f"[{PAPER}]({PAPER_URL})" in text and "ICCV 2023" in text and "2305.19262" in text
    assert "- Code:" not in text  # the paper was linked as "Code" before
    assert text.startswith("---\nlibrary_name: clipcrop\n")


def test_saved_card_names_the_paper_and_the_model(tmp_path):
    ClipCropModel(backbone="google/owlvit-base-patch32", decoder=TINY_DECODER).save_pretrained(tmp_path)
    text = card(tmp_path)
    assert_complete(text)
    assert "`google/owlvit-base-patch32`" in text and "M = 12 ranked crops" in text
    assert "variant `full`" in text
    assert "## Training" in text and "Not recorded in this checkpoint" in text
    assert "Not evaluated yet" in text and "clipcrop evaluate" in text


@pytest.fixture(scope="module")
def gaic(tmp_path_factory):
    return write_gaic(tmp_path_factory.mktemp("gaic"))


@pytest.fixture(scope="module")
def trained(gaic, tiny_backbone_dir, tmp_path_factory):
    from clipcrop.training.config import TrainConfig
    from clipcrop.training.trainer import train

    out = tmp_path_factory.mktemp("card") / "ck"
    decoder = {k: v for k, v in TINY_DECODER.items() if k != "input_dim"}
    config = TrainConfig(
        gaic_root=str(gaic.root),
        text_annotations=str(gaic.text_dir),
        backbone=str(tiny_backbone_dir),
        out_dir=str(out),
        batch_size=4,
        lr=1e-3,
        max_steps=3,
        decoder=decoder,
        device="cpu",
        progress=False,
        seed=7,
    )
    train(config)
    return out


def test_training_run_records_its_data_and_settings(trained, gaic):
    text = card(trained)
    assert_complete(text)
    data_line = next(line for line in text.splitlines() if line.startswith("- Data:"))
    samples = json.loads((trained / "config.json").read_text())["training"]["data"]["samples"]
    assert data_line == (
        f"- Data: GAIC `train` split (`{gaic.root.name}`) with the ClipCrop text annotations "
        f"(`{gaic.text_dir.name}`), {samples} samples"
    )
    assert samples >= 1
    assert "- Steps: 3" in text
    settings = next(line for line in text.splitlines() if line.startswith("- Settings:"))
    for part in ("variant full", "max_steps 3", "batch_size 4", "lr 0.001", "seed 7", "mosaic True"):
        assert part in settings, settings
    assert json.loads((trained / "config.json").read_text())["training"]["variant"] == "full"


def run_evaluate(gaic, model, *extra: str) -> dict:
    import contextlib
    import io

    from clipcrop.cli.main import main

    buf = io.StringIO()
    args = ["evaluate", "--dataset", "gaic", "--root", str(gaic.root), "--annotations", str(gaic.text_dir)]
    with contextlib.redirect_stdout(buf):
        assert main([*args, "--model", str(model), "--json", "--quiet", *extra]) == 0
    return json.loads(buf.getvalue())


def table_values(text: str) -> dict[str, float]:
    rows = [line for line in text.split("## Evaluation", 1)[1].splitlines() if line.startswith("|")]
    names = [c.strip() for c in rows[0].strip("|").split("|")]
    values = [float(c) for c in rows[2].strip("|").split("|")]
    return dict(zip(names, values, strict=True))


def test_evaluation_results_go_on_the_card_for_these_weights_only(trained, gaic, tmp_path):
    before = card(trained)
    run_evaluate(gaic, trained, "--limit", "2")  # a partial run is not the checkpoint's evaluation
    assert card(trained) == before

    data = run_evaluate(gaic, trained)
    text = card(trained)
    assert_complete(text)
    assert re.search(r"gaic `test`, \d+ samples \(trained mode\):", text)
    got = table_values(text)
    assert got == {k: pytest.approx(v, abs=5e-5) for k, v in data["metrics"].items() if k != "num_samples"}
    (entry,) = json.loads((trained / "config.json").read_text())["evaluation"]
    assert entry["weights_sha256"] == weights_digest(trained) and entry["samples"] == data["samples"]

    # published elsewhere (push_to_hub saves the loaded model the same way): the card comes along
    copy = tmp_path / "copy"
    ClipCropModel.from_pretrained(str(trained)).save_pretrained(copy)
    assert table_values(card(copy)) == got and "- Steps: 3" in card(copy)

    # other weights (trained further, say): the old numbers are not theirs, so they leave the card
    changed = ClipCropModel.from_pretrained(str(trained))
    with torch.no_grad():
        next(changed.parameters()).add_(1.0)
    changed.save_pretrained(tmp_path / "changed")
    assert "Not evaluated yet with these weights" in card(tmp_path / "changed")
