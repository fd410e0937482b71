"""The DETR-like crop decoder (paper section 3.2, equations 1-3).

Keys and values are all N image tokens (projected to ``d_model``, plus an embedding of each
token's initial box so attention knows *where* a token is). Queries are M learnable tokens plus
the mean of the selected tokens (eq. 2); without a condition a learned "no condition" vector
takes the mean's place, so one set of weights serves conditioned and un-conditioned crops. The
union box ``b_u`` is embedded into every query too, since the decoder regresses offsets to it.

Every layer's output goes through the same heads (DETR's auxiliary decoding): offsets (cxcywh)
added to ``b_u`` (eq. 3), and a quality-score logit per crop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .box_ops import box_xyxy_to_cxcywh

MIN_SIZE = 1e-3


@dataclass
class DecoderConfig:
    """Sizes of the crop decoder. Stored in the checkpoint's ``config.json``.

    Attributes:
        input_dim: D, the backbone's image-token width.
        d_model: decoder width.
        num_queries: M, crops predicted per image (90 in the paper, following Jia et al.).
        num_layers, num_heads, ffn_dim, dropout: transformer sizes.
    """

    input_dim: int = 768
    d_model: int = 256
    num_queries: int = 90
    num_layers: int = 6
    num_heads: int = 8
    ffn_dim: int = 1024
    dropout: float = 0.1

    @classmethod
    def from_dict(cls, data: dict | DecoderConfig | None) -> DecoderConfig:
        if isinstance(data, DecoderConfig):
            return data
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict:
        return asdict(self)


class MLP(nn.Module):
    """A few linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class DecoderLayer(nn.Module):
    """Post-norm transformer decoder layer: self-attention, cross-attention, feed-forward.

    Positional embeddings are added to queries and keys only (DETR), never to values.
    """

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model)
        )
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, tgt: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor
    ) -> torch.Tensor:
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout(self.self_attn(q, k, tgt, need_weights=False)[0]))
        attn = self.cross_attn(tgt + query_pos, memory + memory_pos, memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout(attn))
        return self.norm3(tgt + self.dropout(self.ffn(tgt)))


class CropDecoder(nn.Module):
    """F_dec of eq. 1: M crop boxes (offsets to ``b_u``) and quality scores."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.input_proj = nn.Linear(config.input_dim, d)
        self.input_norm = nn.LayerNorm(d)
        self.cond_proj = nn.Linear(config.input_dim, d)
        self.no_condition = nn.Parameter(torch.zeros(d))
        self.box_embed = MLP(4, d, d, 2)  # positional embedding of a cxcywh box
        self.query_embed = nn.Embedding(config.num_queries, d)  # t_qry, the learnable query content
        self.query_pos = nn.Embedding(config.num_queries, d)
        self.layers = nn.ModuleList(
            DecoderLayer(d, config.num_heads, config.ffn_dim, config.dropout)
            for _ in range(config.num_layers)
        )
        self.out_norm = nn.LayerNorm(d)
        self.offset_head = MLP(d, d, 4, 3)
        self.score_head = nn.Linear(d, 1)
        nn.init.normal_(self.query_embed.weight, std=1.0)
        # start near b_u: small offsets, so early matching is stable
        nn.init.normal_(self.offset_head.layers[-1].weight, std=1e-3)
        nn.init.zeros_(self.offset_head.layers[-1].bias)

    def forward(
        self,
        tokens: torch.Tensor,
        token_boxes: torch.Tensor,
        condition: torch.Tensor,
        has_condition: torch.Tensor,
        union: torch.Tensor,
    ) -> dict:
        """Decode crops.

        Args:
            tokens: (B, N, D) image tokens (keys and values).
            token_boxes: (B, N, 4) initial boxes of the tokens, normalised xyxy.
            condition: (B, D) mean of the selected tokens (ignored where ``has_condition`` is False).
            has_condition: (B,) bool.
            union: (B, 4) ``b_u``, normalised xyxy.

        Returns:
            ``{"pred_boxes": (B, M, 4) normalised cxcywh, "pred_logits": (B, M) score logits,
            "aux_outputs": [same keys for each earlier layer]}``.
        """
        tokens = tokens.to(self.input_proj.weight.dtype)
        memory = self.input_norm(self.input_proj(tokens))
        memory_pos = self.box_embed(box_xyxy_to_cxcywh(token_boxes.to(memory.dtype)))
        union_c = box_xyxy_to_cxcywh(union.to(memory.dtype))  # (B, 4)
        cond = torch.where(
            has_condition[:, None], self.cond_proj(condition.to(memory.dtype)), self.no_condition[None]
        )
        b = tokens.shape[0]
        tgt = self.query_embed.weight[None].expand(b, -1, -1) + cond[:, None, :]  # eq. 2
        query_pos = self.query_pos.weight[None] + self.box_embed(union_c)[:, None, :]
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, query_pos, memory, memory_pos)
            hidden = self.out_norm(tgt)
            boxes = union_c[:, None, :] + self.offset_head(hidden)  # eq. 3
            boxes = torch.cat([boxes[..., :2], boxes[..., 2:].clamp(min=MIN_SIZE)], dim=-1)
            outputs.append({"pred_boxes": boxes, "pred_logits": self.score_head(hidden)[..., 0]})
        final = dict(outputs[-1])
        final["aux_outputs"] = outputs[:-1]
        return final
