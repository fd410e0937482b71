"""The trainable part of ClipCrop and its checkpoint format.

A ClipCrop checkpoint is a folder written by ``huggingface_hub``'s ``PyTorchModelHubMixin``:
``config.json`` (the decoder's sizes, the selection settings and the backbone's name, plus the
marker ``"clipcrop_format"``, :data:`clipcrop.model_source.CHECKPOINT_MARKER`, by which
:func:`clipcrop.model_source.is_clipcrop_checkpoint` tells it from plain OWL-ViT weights), ``model.safetensors`` (decoder weights) and a model card
``README.md``. A fine-tuned backbone may be saved inside it as ``backbone/``; otherwise the
backbone named in the config is loaded from the Hub or its folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..model_source import CHECKPOINT_MARKER
from .decoder import CropDecoder
from .decoder_config import DecoderConfig
from .selection_settings import DEFAULT_SELECTION, PROMPT_TEMPLATE, VARIANTS, check_selection  # noqa: F401

CHECKPOINT_FORMAT = "clipcrop/1"


class ClipCropModel(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="clipcrop",
    tags=["image-cropping", "owlvit", "clipcrop"],
    paper_url="https://arxiv.org/abs/2305.19262",
):
    """The crop decoder plus everything needed to rebuild it (the Hub mixin saves the init args).

    Args:
        backbone: Hub id or folder of the OWL-ViT/OWLv2 weights the decoder was trained on.
        decoder: :class:`DecoderConfig` as a dict.
        selection: token-selection settings (``min_score``, ``max_keywords``, ``use_full_text``,
            ``use_keywords``, ``use_text``: the paper's ``full``/``key``/``main``/``base`` variants,
            see :data:`VARIANTS`).
        clipcrop_format: checkpoint format version, saved under
            :data:`~clipcrop.model_source.CHECKPOINT_MARKER` (how a ClipCrop checkpoint is told from a
            plain OWL-ViT folder: :func:`~clipcrop.model_source.is_clipcrop_checkpoint`).

    Build a new one with :func:`clipcrop.build.build_model`; a saved one loads with ``from_pretrained``.
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
        """See :meth:`clipcrop.modeling.decoder.CropDecoder.forward`."""
        return self.decoder(tokens, token_boxes, condition, has_condition, union, memory=memory)

    def save_pretrained(self, save_directory, **kwargs):  # type: ignore[override]
        """Save weights, model card and the *complete* config (defaults filled in), so a checkpoint
        never depends on the defaults of the version that loads it. The card is ClipCrop's own
        (:mod:`clipcrop.modeling.model_card`: paper, model, training, evaluation), not the mixin's default."""
        self._hub_mixin_config = self.config_dict()
        out = super().save_pretrained(save_directory, **kwargs)
        from ..io.atomic_files import apply_umask
        from .model_card import write_card

        write_card(save_directory)
        apply_umask(save_directory, ("config.json", "model.safetensors", "README.md"))  # safetensors: 0600
        return out

    def config_dict(self) -> dict:
        """The config ``save_pretrained`` writes (kept in sync with ``__init__``'s arguments)."""
        return {
            "backbone": self.backbone_name,
            "decoder": self.decoder_config.to_dict(),
            "selection": dict(self.selection),
            CHECKPOINT_MARKER: self.clipcrop_format,
            **self.extra,
        }


#: the folder name of a backbone saved inside a checkpoint (fine-tuned with it)
INSIDE_BACKBONE = "backbone"


def portable_backbone_ref(backbone: str, checkpoint_dir: str | os.PathLike, *, inside: bool = False) -> str:
    """How a checkpoint written to ``checkpoint_dir`` names its backbone, so it survives a move.

    A backbone saved inside the checkpoint is ``"backbone"``; a local folder beside the
    checkpoint (sharing its parent, or below it) is a path relative to the checkpoint
    (``"../owlvit"``); a Hub id stays a Hub id; any other local folder stays absolute (moving
    the checkpoint alone cannot break it).
    """
    if inside:
        return INSIDE_BACKBONE
    path = Path(backbone).expanduser()
    if not path.is_dir():
        return backbone  # a Hub id
    target = path.resolve()
    home = Path(checkpoint_dir).expanduser().resolve()
    if target.parent in (home.parent, home) or home in target.parents:
        return os.path.relpath(target, home)
    return str(target)


def resolve_backbone_ref(ref: str, checkpoint_dir: str | os.PathLike | None) -> str:
    """The folder or Hub id a checkpoint's ``backbone`` entry points at: relative paths are
    taken from the checkpoint folder; Hub ids and absolute paths are returned unchanged."""
    if checkpoint_dir is None:
        return ref
    home = Path(checkpoint_dir).expanduser()
    if ref == INSIDE_BACKBONE or ref.startswith((".", "..")) or (home / ref).is_dir():
        return str((home / ref).resolve())
    return ref
