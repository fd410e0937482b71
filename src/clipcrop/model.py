"""The trainable part of ClipCrop and its checkpoint format.

A ClipCrop checkpoint is a folder written by ``huggingface_hub``'s ``PyTorchModelHubMixin``:
``config.json`` (the decoder's sizes, the selection settings and the backbone's name, plus the
marker ``"clipcrop_format"``), ``model.safetensors`` (decoder weights) and a model card
``README.md``. A fine-tuned backbone may be saved inside it as ``backbone/``; otherwise the
backbone named in the config is loaded from the Hub or its folder.
"""

from __future__ import annotations

from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .decoder import CropDecoder, DecoderConfig

CHECKPOINT_FORMAT = "clipcrop/1"
DEFAULT_SELECTION = {
    "min_score": 0.05,
    "max_keywords": 8,
    "use_full_text": True,
    "use_keywords": True,
    "use_text": True,
}
#: the paper's ablation variants (section 4.6) as selection settings
VARIANTS = {
    "full": {"use_text": True, "use_full_text": True, "use_keywords": True},
    "key": {"use_text": True, "use_full_text": False, "use_keywords": True},
    "main": {"use_text": True, "use_full_text": True, "use_keywords": False},
    "base": {"use_text": False, "use_full_text": False, "use_keywords": False},
}


class ClipCropModel(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="clipcrop",
    tags=["image-cropping", "owlvit", "clipcrop"],
    repo_url="https://arxiv.org/abs/2305.19262",
):
    """The crop decoder plus everything needed to rebuild it (the Hub mixin saves the init args).

    Args:
        backbone: Hub id or folder of the OWL-ViT/OWLv2 weights the decoder was trained on.
        decoder: :class:`DecoderConfig` as a dict.
        selection: token-selection settings (``min_score``, ``max_keywords``, ``use_full_text``,
            ``use_keywords``, ``use_text``: the paper's ``full``/``key``/``main``/``base`` variants,
            see :data:`VARIANTS`).
        clipcrop_format: checkpoint format marker; how :func:`clipcrop.predictor.ClipCrop.from_pretrained`
            tells a ClipCrop checkpoint from a plain OWL-ViT folder.
    """

    def __init__(
        self,
        backbone: str = "google/owlvit-base-patch32",
        decoder: dict | None = None,
        selection: dict | None = None,
        clipcrop_format: str = CHECKPOINT_FORMAT,
        **extra: Any,
    ) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.decoder_config = DecoderConfig.from_dict(decoder)
        self.selection = {**DEFAULT_SELECTION, **(selection or {})}
        self.clipcrop_format = clipcrop_format
        self.extra = extra
        self.decoder = CropDecoder(self.decoder_config)

    def forward(
        self,
        tokens: torch.Tensor,
        token_boxes: torch.Tensor,
        condition: torch.Tensor,
        has_condition: torch.Tensor,
        union: torch.Tensor,
        memory: list | None = None,
    ) -> dict:
        """See :meth:`clipcrop.decoder.CropDecoder.forward`."""
        return self.decoder(tokens, token_boxes, condition, has_condition, union, memory=memory)

    def save_pretrained(self, save_directory, **kwargs):  # type: ignore[override]
        """Save weights, model card and the *complete* config (defaults filled in), so a checkpoint
        never depends on the defaults of the version that loads it."""
        self._hub_mixin_config = self.config_dict()
        out = super().save_pretrained(save_directory, **kwargs)
        from .atomic_files import apply_umask

        apply_umask(save_directory, ("config.json", "model.safetensors", "README.md"))  # safetensors: 0600
        return out

    def config_dict(self) -> dict:
        """The config ``save_pretrained`` writes (kept in sync with ``__init__``'s arguments)."""
        return {
            "backbone": self.backbone_name,
            "decoder": self.decoder_config.to_dict(),
            "selection": dict(self.selection),
            "clipcrop_format": self.clipcrop_format,
            **self.extra,
        }
