"""The crop decoder's sizes (:class:`DecoderConfig`), importable without torch.

The command line shows these defaults in ``clipcrop train --help`` and takes its own defaults from
them, before anything heavy is imported; the decoder itself (:mod:`clipcrop.modeling.decoder`) is
built from one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..model_source import DEFAULT_NUM_CROPS


@dataclass(frozen=True)
class DecoderConfig:
    """Sizes of the crop decoder. Stored in the checkpoint's ``config.json``.

    Attributes:
        input_dim: D, the backbone's image-token width.
        d_model: decoder width.
        num_queries: M, crops predicted per image (90 in the paper, following Jia et al.).
        num_layers, num_heads, ffn_dim, dropout: transformer sizes. DETR uses 6 layers and a
            2048-wide feed-forward; 4 layers and 512 keep a repeated query on an encoded image
            (decoder only: its image-side keys/values are cached) under 2% of a full crop on CPU.
    """

    input_dim: int = 768
    d_model: int = 256
    num_queries: int = DEFAULT_NUM_CROPS
    num_layers: int = 4
    num_heads: int = 8
    ffn_dim: int = 512
    dropout: float = 0.1

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | DecoderConfig | None) -> DecoderConfig:
        """A config from a checkpoint's ``decoder`` entry: missing sizes take the defaults, keys
        that are not sizes (written by other versions) are ignored."""
        if isinstance(data, DecoderConfig):
            return data
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["DecoderConfig"]
