"""Keyword extraction and token selection on cases whose answer is known."""

from __future__ import annotations

import torch

from clipcrop.modeling.backbone import ImageFeatures
from clipcrop.modeling.keywords import extract_keywords
from clipcrop.modeling.selection import select_tokens, unconditioned


def test_keywords_from_noun_chunks():
    assert extract_keywords("a woman and three dogs on the boat") == ("woman", "three dogs", "boat")


def test_keywords_none_without_nouns():
    assert extract_keywords("quickly and brightly") == ()


def test_keywords_skip_the_full_text_itself():
    assert extract_keywords("dogs") == ()


def _features() -> ImageFeatures:
    """4 tokens whose class embeddings are one-hot axes; token 3 is a weak match for everything."""
    embeds = torch.eye(4)[None]
    boxes = torch.tensor(
        [[[0.0, 0.0, 0.2, 0.2], [0.1, 0.5, 0.3, 0.9], [0.6, 0.1, 0.9, 0.4], [0.0, 0.0, 1.0, 1.0]]]
    )
    tokens = torch.arange(4 * 3, dtype=torch.float32).reshape(1, 4, 3)
    return ImageFeatures(tokens, boxes, embeds, torch.zeros(1, 4), torch.full((1, 4), 10.0))


def test_each_embedding_selects_its_token_and_union_covers_them():
    feats = _features()
    queries = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])  # -> tokens 1 and 2
    sel = select_tokens(feats, queries, ["full text", "dog"], min_score=0.5)
    assert sel.token_indices.tolist() == [1, 2]
    assert sel.labels == ["full text", "dog"]
    assert torch.allclose(sel.union, torch.tensor([0.1, 0.1, 0.9, 0.9]))
    assert torch.allclose(sel.mean_token, feats.tokens[0, [1, 2]].mean(0))
    # logit = cos * scale = 10 -> probability sigmoid(10)
    assert torch.allclose(sel.scores, torch.sigmoid(torch.tensor([10.0, 10.0])))


def test_implausible_selection_is_dropped_but_best_kept():
    feats = _features()
    # second query matches nothing: cosine 0 with every token -> probability 0.5 < 0.9
    queries = torch.tensor([[1.0, 0.0, 0.0, 0.0], [-1.0, -1.0, -1.0, -1.0]])
    sel = select_tokens(feats, queries, ["full text", "unicorn"], min_score=0.9)
    assert sel.token_indices.tolist() == [0]
    assert torch.allclose(sel.union, feats.boxes[0, 0])
    # everything implausible: the single best selection is still kept
    sel = select_tokens(feats, queries[1:], ["unicorn"], min_score=0.99)
    assert len(sel.token_indices) == 1


def test_token_mask_restricts_selection():
    feats = _features()
    queries = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([False, True, True, True])
    sel = select_tokens(feats, queries, ["full text"], token_mask=mask)
    assert sel.token_indices.tolist() != [0]


def test_unconditioned_is_whole_image():
    sel = unconditioned(_features())
    assert sel.mean_token is None and not sel.conditioned
    assert sel.union.tolist() == [0.0, 0.0, 1.0, 1.0]


def test_degenerate_union_is_grown_inside_the_image():
    from clipcrop.modeling.selection import ensure_min_size

    out = ensure_min_size(torch.tensor([1.0, 0.5, 1.0, 1.0]), 0.05)
    assert torch.allclose(out, torch.tensor([0.95, 0.5, 1.0, 1.0]))
    same = torch.tensor([0.1, 0.2, 0.5, 0.6])
    assert torch.allclose(ensure_min_size(same), same)
