"""The builders (clipcrop.build) and the one function that turns selections into decoder inputs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from clipcrop.build import (
    DECODER_CONFIGS,
    build_criterion,
    build_detection_loss,
    build_model,
    decoder_config,
)
from clipcrop.errors import ParameterError
from clipcrop.modeling.decoder_config import DecoderConfig
from clipcrop.modeling.model import ClipCropModel
from clipcrop.modeling.selection import Selection, decoder_inputs
from clipcrop.modeling.selection_settings import DEFAULT_SELECTION


def test_named_decoder_configs_and_overrides():
    model = build_model("some/backbone", "tiny")
    assert model.decoder_config == DECODER_CONFIGS["tiny"]
    assert model.decoder_config.num_queries == 12 and len(model.decoder.layers) == 2
    assert build_model("b").decoder_config == DecoderConfig() == DECODER_CONFIGS["default"]
    # a dict is sizes over the defaults; input_dim (the backbone's width) wins over any config
    cfg = decoder_config({"num_layers": 1, "d_model": 64}, input_dim=48)
    assert (cfg.num_layers, cfg.d_model, cfg.input_dim, cfg.ffn_dim) == (1, 64, 48, DecoderConfig().ffn_dim)
    assert build_model("b", "tiny", input_dim=16).decoder.input_proj.in_features == 16


def test_unknown_names_are_parameter_errors_that_list_the_valid_ones():
    with pytest.raises(ParameterError, match=r"unknown decoder configuration 'huge'; known: default, tiny"):
        build_model("b", "huge")
    with pytest.raises(ParameterError, match=r"unknown decoder settings: layers"):
        build_model("b", {"layers": 3})
    with pytest.raises(ParameterError, match=r"unknown selection settings: min_scor "):
        build_model("b", "tiny", {"min_scor": 0.2})


def test_built_model_saves_selection_and_extra_and_loads_back(tmp_path):
    torch.manual_seed(0)
    model = build_model("some/backbone", "tiny", {"min_score": 0.2}, training={"variant": "key"})
    model.save_pretrained(tmp_path)
    loaded = ClipCropModel.from_pretrained(tmp_path)
    assert loaded.decoder_config == DECODER_CONFIGS["tiny"]
    assert loaded.selection == {**DEFAULT_SELECTION, "min_score": 0.2}
    assert loaded.extra["training"] == {"variant": "key"}
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_criterion_weights_and_matching_costs_follow_the_settings():
    settings = SimpleNamespace(weight_score=3.0, weight_l1=4.0, weight_giou=0.5, redundancy_iou=0.8)
    crit = build_criterion(settings)  # a TrainConfig has these fields
    assert crit.weight_dict == {"loss_score": 3.0, "loss_l1": 4.0, "loss_giou": 0.5}
    m = crit.matcher
    assert (m.cost_score, m.cost_l1, m.cost_giou, crit.redundancy_iou) == (3.0, 4.0, 0.5, 0.8)
    default = build_criterion()
    assert default.weight_dict == {"loss_score": 1.0, "loss_l1": 5.0, "loss_giou": 2.0}
    assert (default.matcher.cost_l1, default.redundancy_iou) == (5.0, 0.9)


def test_detection_loss_follows_the_finetune_settings():
    settings = SimpleNamespace(
        weight_focal=1.5, weight_l1=5.0, weight_giou=2.0, focal_alpha=0.5, focal_gamma=1.0
    )
    loss = build_detection_loss(settings)  # a FinetuneConfig has these fields
    assert loss.weight_dict == {"loss_focal": 1.5, "loss_l1": 5.0, "loss_giou": 2.0}
    assert (loss.matcher.cost_score, loss.alpha, loss.gamma) == (1.5, 0.5, 1.0)


def _selection(mean: list[float] | None, union: list[float]) -> Selection:
    k = 0 if mean is None else 1
    return Selection(
        token_indices=torch.zeros(k, dtype=torch.long),
        boxes=torch.zeros(k, 4),
        scores=torch.zeros(k),
        labels=["full text"] * k,
        union=torch.tensor(union, dtype=torch.float64),
        mean_token=None if mean is None else torch.tensor(mean),
    )


def test_decoder_inputs_of_a_conditioned_and_an_unconditioned_selection():
    tokens = torch.zeros(2, 5, 3)
    boxes = torch.zeros(2, 5, 4)
    inputs = decoder_inputs(
        [_selection([1.0, 2.0, 3.0], [0.1, 0.2, 0.5, 0.6]), _selection(None, [0.0, 0.0, 1.0, 1.0])],
        tokens,
        boxes,
    )
    assert torch.equal(inputs.condition, torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
    assert inputs.has_condition.tolist() == [True, False]
    assert inputs.union.dtype == torch.float32  # the boxes' dtype, as the decoder's inputs
    assert torch.allclose(inputs.union, torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]]))


def test_random_checkpoint_on_a_backbone_loads_in_trained_mode(tiny_backbone_dir, tmp_path):
    from clipcrop.build import build_random_checkpoint
    from clipcrop.predictor import ClipCrop

    out = build_random_checkpoint(tmp_path / "ck", tiny_backbone_dir, "tiny", seed=3)
    cc = ClipCrop.from_pretrained(out)
    assert cc.mode == "trained" and cc.max_top_k == 12
    assert cc.model.decoder_config == decoder_config("tiny", input_dim=32)
    again = build_random_checkpoint(tmp_path / "ck2", tiny_backbone_dir, "tiny", seed=3)
    assert (out / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
