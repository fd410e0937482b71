"""HungarianMatcher: batching, empty targets, a known optimum, the class cost, no_grad."""

from __future__ import annotations

import itertools

import pytest
import torch

import clipcrop.training.matcher as matcher_mod
from clipcrop.ops.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from clipcrop.training.matcher import HungarianMatcher


def _random_boxes(gen: torch.Generator, *shape: int) -> torch.Tensor:
    cxcy = torch.rand(*shape, 2, generator=gen) * 0.6 + 0.2
    wh = torch.rand(*shape, 2, generator=gen) * 0.3 + 0.1
    return torch.cat([cxcy, wh], dim=-1)


def _cost(m: HungarianMatcher, boxes: torch.Tensor, logits: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Reference cost, written out without batching."""
    l1 = (boxes[:, None, :] - tgt[None, :, :]).abs().sum(-1)
    giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(tgt))
    return -m.cost_score * logits.sigmoid()[:, None] + m.cost_l1 * l1 - m.cost_giou * giou


def test_batched_equals_one_by_one():
    gen = torch.Generator().manual_seed(0)
    batch, queries = 3, 6
    outputs = {
        "pred_boxes": _random_boxes(gen, batch, queries),
        "pred_logits": torch.randn(batch, queries, generator=gen),
    }
    targets = [{"boxes": _random_boxes(gen, k)} for k in (2, 0, 4)]
    m = HungarianMatcher()
    together = m(outputs, targets)
    for b in range(batch):
        alone = m({k: v[b : b + 1] for k, v in outputs.items()}, [targets[b]])[0]
        assert torch.equal(together[b][0], alone[0])
        assert torch.equal(together[b][1], alone[1])
    assert [len(i) for i, _ in together] == [2, 0, 4]
    for src, tgt in together:
        assert src.dtype == torch.int64 and tgt.dtype == torch.int64


def test_assignment_is_optimal_against_brute_force():
    gen = torch.Generator().manual_seed(1)
    m = HungarianMatcher()
    boxes, logits, tgt = _random_boxes(gen, 5), torch.randn(5, generator=gen), _random_boxes(gen, 3)
    src, tgt_idx = m({"pred_boxes": boxes[None], "pred_logits": logits[None]}, [{"boxes": tgt}])[0]
    cost = _cost(m, boxes, logits, tgt)
    got = cost[src, tgt_idx].sum()
    best = min(cost[list(p), list(range(3))].sum() for p in itertools.permutations(range(5), 3))
    assert torch.isclose(got, best, atol=1e-5)


def test_known_optimum_where_greedy_fails():
    # Only the L1 term: t0 at cx=0.5, t1 at cx=0.7; p0 at 0.52, p1 at 0.40, p2 far away.
    # Greedy takes p0-t0 (0.02) then p1-t1 (0.30) = 0.32; the optimum is p0-t1 + p1-t0 = 0.28.
    def box(cx: float) -> list[float]:
        return [cx, 0.5, 0.2, 0.2]

    outputs = {
        "pred_boxes": torch.tensor([[box(0.52), box(0.40), box(0.05)]]),
        "pred_logits": torch.zeros(1, 3),
    }
    targets = [{"boxes": torch.tensor([box(0.5), box(0.7)])}]
    src, tgt = HungarianMatcher(cost_score=0, cost_l1=1, cost_giou=0)(outputs, targets)[0]
    assert dict(zip(src.tolist(), tgt.tolist(), strict=True)) == {0: 1, 1: 0}


def test_exact_boxes_are_matched():
    t = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])
    outputs = {
        "pred_boxes": torch.stack([t[1], torch.tensor([0.5, 0.5, 0.9, 0.9]), t[0]])[None],
        "pred_logits": torch.zeros(1, 3),
    }
    src, tgt = HungarianMatcher()(outputs, [{"boxes": t}])[0]
    assert src.tolist() == [0, 2] and tgt.tolist() == [1, 0]


def test_more_targets_than_predictions():
    gen = torch.Generator().manual_seed(2)
    outputs = {"pred_boxes": _random_boxes(gen, 1, 2), "pred_logits": torch.zeros(1, 2)}
    src, tgt = HungarianMatcher()(outputs, [{"boxes": _random_boxes(gen, 5)}])[0]
    assert len(src) == len(tgt) == 2 and len(set(tgt.tolist())) == 2


def test_empty_targets():
    gen = torch.Generator().manual_seed(3)
    outputs = {"pred_boxes": _random_boxes(gen, 2, 4), "pred_logits": torch.zeros(2, 4)}
    empty = {"boxes": torch.zeros(0, 4)}
    for src, tgt in HungarianMatcher()(outputs, [empty, empty]):
        assert src.shape == (0,) and tgt.shape == (0,) and src.dtype == torch.int64


def test_score_term_breaks_ties():
    # Two identical predicted boxes: the one with the higher score gets the target.
    b = [0.5, 0.5, 0.4, 0.4]
    outputs = {"pred_boxes": torch.tensor([[b, b]]), "pred_logits": torch.tensor([[-2.0, 3.0]])}
    src, _ = HungarianMatcher()(outputs, [{"boxes": torch.tensor([b])}])[0]
    assert src.tolist() == [1]


def test_class_cost_uses_label_probability():
    b = [0.5, 0.5, 0.4, 0.4]
    outputs = {
        "pred_boxes": torch.tensor([[b, b]]),
        "pred_logits": torch.zeros(1, 2),
        # prediction 0 believes class 2, prediction 1 class 0
        "pred_class_logits": torch.tensor([[[-5.0, -5.0, 5.0], [5.0, -5.0, -5.0]]]),
    }
    targets = [{"boxes": torch.tensor([b, b]), "labels": torch.tensor([0, 2])}]
    src, tgt = HungarianMatcher()(outputs, targets)[0]
    assert dict(zip(src.tolist(), tgt.tolist(), strict=True)) == {1: 0, 0: 1}
    with pytest.raises(ValueError, match="labels"):
        HungarianMatcher()(outputs, [{"boxes": torch.tensor([b])}])


def test_runs_without_grad(monkeypatch):
    seen: list[bool] = []
    real = matcher_mod.generalized_box_iou

    def spy(a, b):
        seen.append(torch.is_grad_enabled())
        return real(a, b)

    monkeypatch.setattr(matcher_mod, "generalized_box_iou", spy)
    gen = torch.Generator().manual_seed(4)
    boxes = _random_boxes(gen, 1, 3).requires_grad_()
    logits = torch.zeros(1, 3, requires_grad=True)
    HungarianMatcher()({"pred_boxes": boxes, "pred_logits": logits}, [{"boxes": _random_boxes(gen, 2)}])
    assert seen == [False]


def test_nan_cost_is_reported():
    outputs = {"pred_boxes": torch.full((1, 2, 4), float("nan")), "pred_logits": torch.zeros(1, 2)}
    with pytest.raises(ValueError, match="finite"):
        HungarianMatcher()(outputs, [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}])


def test_all_zero_costs_refused():
    with pytest.raises(ValueError):
        HungarianMatcher(0, 0, 0)
