"""CPU int8: dynamic quantisation of the layers that cost time and do not move the result.

Quantising every ``Linear`` of OWL-ViT (heads and text tower included) moved the top-1 crop on a
calibrated full-size B/32: mean IoU 0.72 with fp32's over 18 photo-query pairs, and the union
box never matched. The detection heads turn small changes of the tokens into different boxes
and rankings, and attention projections feed every token into every other; the vision tower's
MLPs hold most of the multiply-adds yet their rounding errors average out. So only those
(``vision_model.encoder.layers.*.mlp.fc1/fc2``) are quantised; heads, attention, the text tower
and the layer norms stay fp32. ``benchmarks/precision.py`` measures the trade.
"""

from __future__ import annotations

import warnings

import torch

#: which Linear layers int8 replaces: the vision tower's MLPs
INT8_PATTERN = (".vision_model.encoder.layers.", ".mlp.")


def int8_layer_names(model: torch.nn.Module) -> set[str]:
    """Names of the ``Linear`` layers :func:`quantize_int8` replaces."""
    return {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and all(part in name for part in INT8_PATTERN)
    }


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation (CPU) of :func:`int8_layer_names`, in place; returns ``model``."""
    names = int8_layer_names(model)
    with warnings.catch_warnings():
        # torch 2.13 marks its quantised-tensor constructors deprecated (moving to torchao);
        # the pinned torch still runs them, so the notice would only alarm CLI users
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(model, names, dtype=torch.qint8, inplace=True)
