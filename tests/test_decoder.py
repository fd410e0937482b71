"""Decoder shapes, eq. 3 at initialisation, and gradient flow."""

from __future__ import annotations

import torch

from clipcrop.modeling.decoder import CropDecoder, DecoderConfig
from clipcrop.ops.box_ops import box_xyxy_to_cxcywh


def _inputs(b=2, n=36, d=32):
    torch.manual_seed(0)
    tokens = torch.randn(b, n, d)
    xy = torch.rand(b, n, 2) * 0.5
    boxes = torch.cat([xy, xy + 0.3], dim=-1)
    cond = torch.randn(b, d)
    has = torch.tensor([True, False])[:b]
    union = torch.tensor([[0.1, 0.2, 0.6, 0.9], [0.0, 0.0, 1.0, 1.0]])[:b]
    return tokens, boxes, cond, has, union


def test_output_shapes_and_aux():
    cfg = DecoderConfig(
        input_dim=32, d_model=32, num_queries=7, num_layers=3, num_heads=4, ffn_dim=64, dropout=0.0
    )
    out = CropDecoder(cfg)(*_inputs())
    assert out["pred_boxes"].shape == (2, 7, 4)
    assert out["pred_logits"].shape == (2, 7)
    assert len(out["aux_outputs"]) == 2
    assert all(a["pred_boxes"].shape == (2, 7, 4) for a in out["aux_outputs"])


def test_initial_boxes_are_offsets_of_the_union_box():
    cfg = DecoderConfig(
        input_dim=32, d_model=32, num_queries=5, num_layers=2, num_heads=4, ffn_dim=64, dropout=0.0
    )
    tokens, boxes, cond, has, union = _inputs()
    out = CropDecoder(cfg)(tokens, boxes, cond, has, union)
    expected = box_xyxy_to_cxcywh(union)[:, None, :].expand(-1, 5, -1)
    assert torch.allclose(out["pred_boxes"], expected, atol=0.05)


def test_condition_changes_the_queries():
    cfg = DecoderConfig(
        input_dim=32, d_model=32, num_queries=5, num_layers=2, num_heads=4, ffn_dim=64, dropout=0.0
    )
    dec = CropDecoder(cfg)
    tokens, boxes, cond, has, union = _inputs()
    a = dec(tokens, boxes, cond, torch.tensor([True, True]), union)["pred_logits"]
    b = dec(tokens, boxes, cond, torch.tensor([False, False]), union)["pred_logits"]
    assert not torch.allclose(a, b)


def test_gradient_reaches_every_parameter():
    cfg = DecoderConfig(
        input_dim=32, d_model=32, num_queries=5, num_layers=2, num_heads=4, ffn_dim=64, dropout=0.0
    )
    dec = CropDecoder(cfg)
    tokens, boxes, cond, has, union = _inputs()
    out = dec(tokens, boxes, cond, has, union)
    loss = out["pred_boxes"].sum() + out["pred_logits"].sum()
    loss = loss + sum(a["pred_boxes"].sum() + a["pred_logits"].sum() for a in out["aux_outputs"])
    loss.backward()
    for name, p in dec.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_cached_memory_gives_identical_outputs():
    cfg = DecoderConfig(
        input_dim=32, d_model=32, num_queries=5, num_layers=2, num_heads=4, ffn_dim=64, dropout=0.0
    )
    dec = CropDecoder(cfg).eval()
    tokens, boxes, cond, has, union = _inputs()
    with torch.no_grad():
        memory = dec.memory(tokens, boxes)
        a = dec(tokens, boxes, cond, has, union)
        b = dec(tokens, boxes, cond, has, union, memory=memory)
    assert torch.equal(a["pred_boxes"], b["pred_boxes"]) and torch.equal(a["pred_logits"], b["pred_logits"])
