"""SetCriterion: hand-computed losses, redundancy-smoothed score targets, aux terms, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clipcrop.ops.box_ops import box_xyxy_to_cxcywh
from clipcrop.training.criterion import SetCriterion, build_target, normalise_mos, positives_from_mos
from clipcrop.training.matcher import HungarianMatcher


def _bce(x: float, y: float) -> float:
    return max(x, 0.0) - x * y + math.log1p(math.exp(-abs(x)))


def cxcywh(*xyxy: float) -> list[float]:
    return box_xyxy_to_cxcywh(torch.tensor(xyxy)).tolist()


# Annotated crops (xyxy): t0 the only positive (MOS 5); t1 (MOS 3), t3 (MOS 3.5) near-duplicates.
T0, T1, T2, T3 = (0.3, 0.3, 0.7, 0.7), (0.1, 0.1, 0.5, 0.5), (0.5, 0.5, 0.9, 0.9), (0.1, 0.1, 0.5, 0.45)
MOS = [5.0, 3.0, 2.0, 3.5]
# Predictions: p0 = t0 shifted by 0.02 in x (matched); p1 IoU 0.95 with t1 and 0.92 with t3 (smoothed
# with t1's quality); p2 IoU 0.8 with t2 (below 0.9: target 0).
P0, P1, P2 = (0.32, 0.3, 0.72, 0.7), (0.1, 0.1, 0.5, 0.48), (0.5, 0.5, 0.9, 0.82)
LOGITS = [0.3, -0.2, 1.0]


def _case(requires_grad: bool = False):
    boxes = torch.tensor([[cxcywh(*P0), cxcywh(*P1), cxcywh(*P2)]], requires_grad=requires_grad)
    logits = torch.tensor([LOGITS], requires_grad=requires_grad)
    target = build_target(np.array([T0, T1, T2, T3]), np.array(MOS))
    return {"pred_boxes": boxes, "pred_logits": logits}, [target]


def test_helpers():
    assert np.allclose(normalise_mos(np.array([1.0, 3.0, 5.0, 0.0, 6.0])), [0, 0.5, 1, 0, 1])
    assert torch.allclose(normalise_mos(torch.tensor([2.0])), torch.tensor([0.25]))
    assert positives_from_mos(np.array([4.0, 3.9, 4.2])).tolist() == [True, False, True]
    # no MOS >= 4: the crops tied at the best MOS
    assert positives_from_mos(np.array([3.5, 2.0, 3.5])).tolist() == [True, False, True]
    assert positives_from_mos(torch.tensor([3.0, 3.5])).tolist() == [False, True]
    assert positives_from_mos(np.zeros(0)).shape == (0,)
    t = build_target(np.array([[0.0, 0.0, 0.5, 1.0]]), np.array([4.0]))
    assert torch.allclose(t["boxes"], torch.tensor([[0.25, 0.5, 0.5, 1.0]]))
    assert t["quality"].tolist() == [0.75] and t["positive"].tolist() == [True]


def test_score_targets_hand_computed():
    outputs, targets = _case()
    crit = SetCriterion(HungarianMatcher())
    indices = crit.match(outputs, targets)
    assert indices[0][0].tolist() == [0] and indices[0][1].tolist() == [0]
    st = crit.score_targets(outputs["pred_boxes"], targets, indices)
    # matched 1; IoU 0.95 with t1 (quality (3-1)/4) beats IoU 0.92 with t3; IoU 0.8 -> 0
    assert torch.allclose(st, torch.tensor([[1.0, 0.5, 0.0]]))
    # redundancy off: only the matched one
    st_off = SetCriterion(HungarianMatcher(), redundancy_iou=1.01).score_targets(
        outputs["pred_boxes"], targets, indices
    )
    assert torch.allclose(st_off, torch.tensor([[1.0, 0.0, 0.0]]))
    # threshold 0.75 also smooths p2 with t2's quality (2-1)/4
    st_low = SetCriterion(HungarianMatcher(), redundancy_iou=0.75).score_targets(
        outputs["pred_boxes"], targets, indices
    )
    assert torch.allclose(st_low, torch.tensor([[1.0, 0.5, 0.25]]))


def test_losses_hand_computed():
    outputs, targets = _case()
    losses = SetCriterion(HungarianMatcher())(outputs, targets)
    assert set(losses) == {"loss_score", "loss_l1", "loss_giou"}
    assert losses["loss_l1"].item() == pytest.approx(0.02, abs=1e-6)
    # p0 vs t0: intersection 0.38*0.4, union 0.168 equals the hull, so GIoU = IoU
    assert losses["loss_giou"].item() == pytest.approx(1 - 0.152 / 0.168, abs=1e-6)
    expected = (_bce(0.3, 1.0) + _bce(-0.2, 0.5) + _bce(1.0, 0.0)) / 3
    assert losses["loss_score"].item() == pytest.approx(expected, abs=1e-6)


def test_box_losses_average_over_matched_boxes_in_the_batch():
    outputs, targets = _case()
    two = {k: torch.cat([v, v]) for k, v in outputs.items()}
    losses = SetCriterion(HungarianMatcher())(two, targets + targets)
    assert losses["loss_l1"].item() == pytest.approx(0.02, abs=1e-6)


def test_aux_losses_and_weighted_total():
    outputs, targets = _case()
    aux = {k: v.clone() for k, v in outputs.items()}
    aux["pred_logits"] = aux["pred_logits"] - 1.0
    outputs = {**outputs, "aux_outputs": [aux, outputs]}
    crit = SetCriterion(HungarianMatcher(), weight_dict={"loss_score": 1.0, "loss_l1": 5.0, "loss_giou": 2.0})
    losses = crit(outputs, targets)
    assert set(losses) == {f"loss_{n}{s}" for n in ("score", "l1", "giou") for s in ("", "_0", "_1")}
    assert losses["loss_score_0"].item() != pytest.approx(losses["loss_score"].item())
    assert losses["loss_score_1"].item() == pytest.approx(losses["loss_score"].item())
    manual = sum(
        w * losses[f"{name}{s}"]
        for name, w in (("loss_score", 1.0), ("loss_l1", 5.0), ("loss_giou", 2.0))
        for s in ("", "_0", "_1")
    )
    assert crit.total(losses).item() == pytest.approx(manual.item(), rel=1e-6)
    # unweighted extra terms are ignored by total()
    assert crit.total({**losses, "cardinality_error": torch.tensor(100.0)}).item() == pytest.approx(
        manual.item(), rel=1e-6
    )


def test_zero_positives_and_zero_crops_have_no_nan():
    gen = torch.Generator().manual_seed(0)
    boxes = torch.cat([torch.rand(2, 5, 2, generator=gen) * 0.5 + 0.25, torch.full((2, 5, 2), 0.3)], -1)
    boxes.requires_grad_()
    logits = torch.randn(2, 5, generator=gen, requires_grad=True)
    no_pos = build_target(np.array([T1, T2]), np.array([3.0, 2.0]))
    no_pos["positive"][:] = False  # force: nothing to match
    nothing = build_target(np.zeros((0, 4)), np.zeros(0))
    crit = SetCriterion(HungarianMatcher())
    losses = crit({"pred_boxes": boxes, "pred_logits": logits}, [no_pos, nothing])
    for v in losses.values():
        assert torch.isfinite(v)
    assert losses["loss_l1"].item() == 0.0 and losses["loss_giou"].item() == 0.0
    crit.total(losses).backward()
    assert torch.isfinite(boxes.grad).all() and torch.isfinite(logits.grad).all()


def test_gradients_reach_boxes_and_logits():
    outputs, targets = _case(requires_grad=True)
    crit = SetCriterion(HungarianMatcher())
    crit.total(crit(outputs, targets)).backward()
    assert outputs["pred_boxes"].grad.abs().sum() > 0
    assert outputs["pred_boxes"].grad[0, 0].abs().sum() > 0  # the matched box gets box-loss gradient
    assert (outputs["pred_logits"].grad.abs() > 0).all()
