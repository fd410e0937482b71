"""Token-selection settings and the paper's variants, torch-free (paper 3.2 and 4.6).

Stored in every trained checkpoint's ``config.json`` and overridable (``ClipCrop(selection=...)``);
the predictor, the trainer, the model and its card read them from here.
"""

from __future__ import annotations

from ..errors import ParameterError

#: OWL-ViT was trained on prompts like "a photo of a cat" (its ensembles average such templates),
#: so a bare keyword ("dog") is embedded inside this template; the full query is a sentence
#: already and goes in as written
PROMPT_TEMPLATE = "a photo of a {}"
DEFAULT_SELECTION = {
    # a selection whose OWL-ViT probability is under this is dropped (the best one is always
    # kept). Pretrained OWL-ViT puts almost every token of a photo under 0.01 for a query and
    # real matches from about 0.1 up (its docs threshold text queries at 0.1); half of that
    # keeps a keyword that matches weakly without letting background tokens widen ``b_u``
    "min_score": 0.05,
    "max_keywords": 8,
    "use_full_text": True,
    "use_keywords": True,
    "use_text": True,
    "prompt_template": PROMPT_TEMPLATE,
    # training-free mode: detections of the generic object prompts at or above this probability
    # count as "other objects" a crop should not cut: OWL-ViT's documented 0.1 for text queries
    "object_threshold": 0.1,
}


def check_selection(selection: dict | None) -> dict:
    """``selection`` (overrides of :data:`DEFAULT_SELECTION`) as a dict, checked for unknown keys.

    Raises:
        ParameterError: a key that is not a selection setting (a typo would otherwise be ignored).
    """
    unknown = set(selection or {}) - set(DEFAULT_SELECTION)
    if unknown:
        raise ParameterError(
            f"unknown selection settings: {', '.join(sorted(unknown))} (known: {', '.join(DEFAULT_SELECTION)})"
        )
    return dict(selection or {})


#: the paper's ablation variants (section 4.6) as selection settings
VARIANTS = {
    "full": {"use_text": True, "use_full_text": True, "use_keywords": True},
    "key": {"use_text": True, "use_full_text": False, "use_keywords": True},
    "main": {"use_text": True, "use_full_text": True, "use_keywords": False},
    "base": {"use_text": False, "use_full_text": False, "use_keywords": False},
}
