"""Token selection and the union box ``b_u`` (paper section 3.2).

Each condition embedding (the full text, each keyword, or one image-query embedding) selects
the image token whose OWL-ViT detection logit for it is highest, with that token's initial box.
Selections that are implausible (detection probability under ``min_score``) are dropped, except
that the single best selection is always kept: the user asked for *something*, and the best
match is a better guess than the whole image. ``b_u`` is the union of the kept boxes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..ops.box_ops import union_box
from .backbone import ImageFeatures
from .selection_settings import DEFAULT_SELECTION

WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)
#: smallest side of ``b_u`` as a fraction of the image: a degenerate box (a token whose box
#: collapsed onto the border) would leave the decoder offsets to nothing
MIN_UNION_SIZE = 0.05


def ensure_min_size(box: torch.Tensor, min_size: float = MIN_UNION_SIZE) -> torch.Tensor:
    """Grow (..., 4) normalised xyxy boxes around their centres to at least ``min_size`` per side,
    inside [0, 1]."""
    box = box.clamp(0.0, 1.0)
    lo, hi = box[..., :2], box[..., 2:]
    size = (hi - lo).clamp(min=min_size)
    centre = torch.minimum(torch.maximum((lo + hi) / 2, size / 2), 1 - size / 2)
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


@dataclass
class Selection:
    """What a condition selected in one image.

    Attributes:
        token_indices: (K,) int64 indices into the N image tokens (K = 0 when unconditioned).
        boxes: (K, 4) the selected tokens' initial boxes, normalised xyxy.
        scores: (K,) OWL-ViT detection probabilities of the selections.
        labels: K strings: which condition ("full text", a keyword or "image query") chose each.
        union: (4,) ``b_u``, normalised xyxy (the whole image when K = 0).
        mean_token: (D,) mean of the selected image tokens, or None when K = 0.
    """

    token_indices: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: list[str]
    union: torch.Tensor
    mean_token: torch.Tensor | None

    @property
    def conditioned(self) -> bool:
        return self.mean_token is not None


def unconditioned(features: ImageFeatures) -> Selection:
    """The selection used without a condition: no tokens, ``b_u`` = the whole image."""
    device, dtype = features.boxes.device, features.boxes.dtype
    return Selection(
        token_indices=torch.zeros(0, dtype=torch.long, device=device),
        boxes=torch.zeros(0, 4, dtype=dtype, device=device),
        scores=torch.zeros(0, dtype=dtype, device=device),
        labels=[],
        union=torch.tensor(WHOLE_IMAGE, dtype=dtype, device=device),
        mean_token=None,
    )


def select_tokens(
    features: ImageFeatures,
    query_embeds: torch.Tensor,
    labels: list[str],
    *,
    min_score: float = DEFAULT_SELECTION["min_score"],
    token_mask: torch.Tensor | None = None,
) -> Selection:
    """Select one image token per condition embedding.

    Args:
        features: backbone outputs of one image (B = 1).
        query_embeds: (W, Dq) condition embeddings: the full text first, then keywords.
        labels: W names for the embeddings (kept in the result for explanations).
        min_score: selections whose detection probability is below this are dropped (the best
            one is always kept).
        token_mask: optional (N,) bool: tokens allowed to be selected (training masks tokens
            outside a mosaic's target tile); all allowed when None.
    """
    if query_embeds.shape[0] == 0:
        return unconditioned(features)
    logits = features.logits(query_embeds.to(features.class_embeds.device))[0]  # (N, W)
    if token_mask is not None and bool(token_mask.any()):
        logits = logits.masked_fill(~token_mask[:, None], float("-inf"))
    best_logit, best_index = logits.max(dim=0)  # (W,)
    probs = torch.sigmoid(best_logit)
    keep = probs >= min_score
    keep[int(torch.argmax(probs))] = True
    idx = best_index[keep]
    boxes = features.boxes[0, idx]
    return Selection(
        token_indices=idx,
        boxes=boxes,
        scores=probs[keep],
        labels=[lab for lab, k in zip(labels, keep.tolist(), strict=True) if k],
        union=ensure_min_size(union_box(boxes)),
        mean_token=features.tokens[0, idx].mean(dim=0),
    )


def condition_texts(text: str, settings: Mapping) -> tuple[list[str], list[str]]:
    """What a text condition embeds, and the label of each: the full text (as written) and the
    keywords (inside ``settings["prompt_template"]``, as OWL-ViT was trained on prompts).

    The one place that turns a query into texts, shared by the predictor and the trainer so
    training and inference cannot drift apart. ``settings`` are the selection settings
    (:data:`clipcrop.modeling.model.DEFAULT_SELECTION`'s keys; missing ones take its values).

    Returns:
        (texts to embed, labels): labels are ``"full text"`` or the bare keyword.
    """
    from .keywords import extract_keywords

    settings = {**DEFAULT_SELECTION, **settings}
    keywords = list(extract_keywords(text, int(settings["max_keywords"]))) if settings["use_keywords"] else []
    template = settings["prompt_template"] or "{}"
    texts: list[str] = []
    labels: list[str] = []
    if settings["use_full_text"] or not keywords:
        texts.append(text)
        labels.append("full text")
    for keyword in keywords:
        texts.append(template.format(keyword))
        labels.append(keyword)
    return texts, labels


@dataclass
class DecoderInputs:
    """The condition side of the decoder's input for a batch of B selections
    (:meth:`clipcrop.modeling.decoder.CropDecoder.forward`'s ``condition``, ``has_condition``, ``union``).

    Attributes:
        condition: (B, D) mean of each selection's tokens; zeros where unconditioned (the decoder
            uses its learned "no condition" vector there).
        has_condition: (B,) bool.
        union: (B, 4) ``b_u``, normalised xyxy (the whole image where unconditioned).
    """

    condition: torch.Tensor
    has_condition: torch.Tensor
    union: torch.Tensor


def decoder_inputs(
    selections: Sequence[Selection], tokens: torch.Tensor, token_boxes: torch.Tensor
) -> DecoderInputs:
    """Turn B selections into the decoder's condition inputs.

    The one place that does so, shared by the predictor and the trainer, so that training and
    inference feed the decoder alike.

    Args:
        selections: one per image of the batch.
        tokens: (B, N, D) the batch's image tokens: width, dtype and device of ``condition``.
        token_boxes: (B, N, 4) their boxes, normalised xyxy: dtype and device of ``union``.
    """
    d = tokens.shape[-1]
    condition = torch.stack(
        [s.mean_token if s.mean_token is not None else tokens.new_zeros(d) for s in selections]
    )
    has_condition = torch.tensor([s.conditioned for s in selections], device=tokens.device)
    union = torch.stack([s.union.to(token_boxes) for s in selections])
    return DecoderInputs(condition, has_condition, union)
