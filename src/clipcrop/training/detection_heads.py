"""OWL-ViT's detection heads when training a backbone from scratch: detect saturation, re-initialise.

Randomly initialised checkpoints (``transformers``' default init, e.g.
:func:`clipcrop.synthetic.random_models.make_random_owlvit`) have box-head outputs in the hundreds,
so no gradient reaches the boxes; :func:`heads_saturated` tells, :func:`init_detection_heads` fixes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: fresh class head: initial logit scale, and the detection probability every token starts at
HEAD_LOGIT_SCALE = 5.0
HEAD_PRIOR_PROB = 0.01


def init_detection_heads(model: nn.Module, prior_prob: float = HEAD_PRIOR_PROB) -> None:
    """Fresh OWL-ViT detection heads, for training from scratch (DETR / RetinaNet practice).

    Randomly initialised checkpoints (``transformers``' default init) have box-head outputs in the
    hundreds: every box sigmoid saturates at 0 or 1 and no gradient reaches it. Here the box head
    gets Xavier weights and a zero last layer, so every token starts at OWL-ViT's box prior (its own
    patch, ``box_bias``); the class head gets logit scale :data:`HEAD_LOGIT_SCALE` and a shift that
    makes every initial detection probability ``prior_prob`` (the focal-loss prior).
    """
    box, cls = model.box_head, model.class_head
    with torch.no_grad():
        for layer in (box.dense0, box.dense1, cls.dense0):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(box.dense2.weight)
        nn.init.zeros_(box.dense2.bias)
        nn.init.zeros_(cls.logit_scale.weight)
        nn.init.constant_(cls.logit_scale.bias, HEAD_LOGIT_SCALE - 1.0)  # elu(x) + 1 = x + 1 for x > 0
        nn.init.zeros_(cls.logit_shift.weight)
        nn.init.constant_(cls.logit_shift.bias, math.log(prior_prob / (1 - prior_prob)) / HEAD_LOGIT_SCALE)


@torch.no_grad()
def heads_saturated(model: nn.Module, pixel_values: torch.Tensor, limit: float = 10.0) -> bool:
    """True when most box-head outputs (before the sigmoid, box prior added) exceed ``limit`` in
    magnitude on these images: the boxes cannot learn, the heads need :func:`init_detection_heads`."""
    feature_map = model.image_embedder(pixel_values=pixel_values)[0]
    b, h, w, d = feature_map.shape
    tokens = feature_map.reshape(b, h * w, d)
    raw = model.box_head(tokens) + model.compute_box_bias(h, w).to(tokens)
    return bool((raw.abs() > limit).float().mean() > 0.5)


__all__ = ["HEAD_LOGIT_SCALE", "HEAD_PRIOR_PROB", "heads_saturated", "init_detection_heads"]
