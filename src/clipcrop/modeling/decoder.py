"""The DETR-like crop decoder (paper section 3.2, equations 1-3).

Keys and values are all N image tokens (projected to ``d_model``, plus an embedding of each
token's initial box so attention knows *where* a token is). Queries are M learnable tokens plus
the mean of the selected tokens (eq. 2); without a condition a learned "no condition" vector
takes the mean's place, so one set of weights serves conditioned and un-conditioned crops. The
union box ``b_u`` is embedded into every query too, since the decoder regresses offsets to it.

Every layer's output goes through the same heads (DETR's auxiliary decoding): offsets (cxcywh)
added to ``b_u`` (eq. 3), and a quality-score logit per crop.

Its sizes are a :class:`~clipcrop.modeling.decoder_config.DecoderConfig` (kept in a module of its
own, importable without torch); :func:`clipcrop.build.build_model` builds a whole model from one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.box_ops import box_xyxy_to_cxcywh
from .decoder_config import DecoderConfig

MIN_SIZE = 1e-3


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


class Attention(nn.Module):
    """Multi-head attention whose key/value projections can be computed once and reused.

    The cross-attention keys and values depend only on the image, not on the condition, so
    :meth:`CropDecoder.memory` projects them once per image; each further query then pays only
    for the M decoder queries (what makes many queries on one encoded image cheap).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def project_kv(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, d) keys and values -> per-head (B, H, N, d/H) tensors."""
        return self._heads(self.k_proj(key)), self._heads(self.v_proj(value))

    def forward(self, query: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q = self._heads(self.q_proj(query))
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], dropout_p=p)
        b, h, n, dh = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * dh))


class DecoderLayer(nn.Module):
    """Post-norm transformer decoder layer: self-attention, cross-attention, feed-forward.

    Positional embeddings are added to queries and keys only (DETR), never to values.
    """

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = Attention(d_model, num_heads, dropout)
        self.cross_attn = Attention(d_model, num_heads, dropout)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model)
        )
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def memory_kv(self, memory: torch.Tensor, memory_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's cross-attention keys (memory + position) and values (memory)."""
        return self.cross_attn.project_kv(memory + memory_pos, memory)

    def forward(
        self, tgt: torch.Tensor, query_pos: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout(self.self_attn(q, self.self_attn.project_kv(q, tgt))))
        tgt = self.norm2(tgt + self.dropout(self.cross_attn(tgt + query_pos, kv)))
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

    def memory(
        self, tokens: torch.Tensor, token_boxes: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer cross-attention keys/values of the image tokens; depends on the image only.

        Args:
            tokens: (B, N, D) image tokens; token_boxes: (B, N, 4) their initial boxes, normalised xyxy.
        Returns:
            one ``(k, v)`` pair of (B, H, N, d_model/H) tensors per layer, for ``forward(memory=...)``.
        """
        tokens = tokens.to(self.input_proj.weight.dtype)
        memory = self.input_norm(self.input_proj(tokens))
        memory_pos = self.box_embed(box_xyxy_to_cxcywh(token_boxes.to(memory.dtype)))
        return [layer.memory_kv(memory, memory_pos) for layer in self.layers]

    def forward(
        self,
        tokens: torch.Tensor,
        token_boxes: torch.Tensor,
        condition: torch.Tensor,
        has_condition: torch.Tensor,
        union: torch.Tensor,
        memory: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> dict:
        """Decode crops.

        Args:
            tokens: (B, N, D) image tokens (keys and values).
            token_boxes: (B, N, 4) initial boxes of the tokens, normalised xyxy.
            condition: (B, D) mean of the selected tokens (ignored where ``has_condition`` is False).
            has_condition: (B,) bool.
            union: (B, 4) ``b_u``, normalised xyxy.
            memory: optional result of :meth:`memory` for these tokens (skips re-projecting them).

        Returns:
            ``{"pred_boxes": (B, M, 4) normalised cxcywh, "pred_logits": (B, M) score logits,
            "aux_outputs": [same keys for each earlier layer]}``.
        """
        if memory is None:
            memory = self.memory(tokens, token_boxes)
        dtype = self.input_proj.weight.dtype
        union_c = box_xyxy_to_cxcywh(union.to(dtype))  # (B, 4)
        cond = torch.where(
            has_condition[:, None], self.cond_proj(condition.to(dtype)), self.no_condition[None]
        )
        b = union.shape[0]
        tgt = self.query_embed.weight[None].expand(b, -1, -1) + cond[:, None, :]  # eq. 2
        query_pos = self.query_pos.weight[None] + self.box_embed(union_c)[:, None, :]
        outputs = []
        for layer, kv in zip(self.layers, memory, strict=True):
            tgt = layer(tgt, query_pos, kv)
            hidden = self.out_norm(tgt)
            boxes = union_c[:, None, :] + self.offset_head(hidden)  # eq. 3
            boxes = torch.cat([boxes[..., :2], boxes[..., 2:].clamp(min=MIN_SIZE)], dim=-1)
            outputs.append({"pred_boxes": boxes, "pred_logits": self.score_head(hidden)[..., 0]})
        final = dict(outputs[-1])
        final["aux_outputs"] = outputs[:-1]
        return final
