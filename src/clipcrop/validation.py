"""Validation of request arguments, shared by the library, the CLI and the service.

Every function raises a :mod:`clipcrop.errors` class (``QueryError`` or ``ParameterError``, both
``InputError`` with HTTP status 400) whose message says what is wrong and what to do, so that the
CLI can print it as its one ``error`` line and the service can return it in its 4xx JSON body.
Messages never echo control characters back.

Typical use, in this order::

    validate_query_pair(query, image_query)
    query = validate_query(query, limits)
    top_k = validate_top_k(top_k, limits.max_top_k or num_crops)   # library / JSON
"""

from __future__ import annotations

import numbers
import re
import unicodedata

from .errors import ParameterError, QueryError
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["MAX_DETECTIONS", "validate_query", "validate_top_k", "validate_query_pair"]

#: the most detections one ``detect`` call (library, CLI, ``POST /v1/detect``) returns. Not the
#: model's number of crops: every image token is a detection (36 on the tiny test checkpoint,
#: 576 on B/32, 3600 on OWLv2 B/16), and a thousand boxes is already more than any reader uses
MAX_DETECTIONS = 1000

# C0 controls except tab, line feed and carriage return; DEL; C1 controls (U+0080-U+009F).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s+")  # Unicode whitespace: also NBSP, U+3000, U+2028, ...
# Characters that print nothing: format characters (zero-width space, BOM, bidi marks) and spaces.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Zs", "Zl", "Zp"})


def validate_query(query: str | None, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Check and normalise a text query.

    ``None`` (no query: an unconditioned crop) is returned unchanged.  Otherwise the query must be
    a ``str`` without NUL bytes, C0/C1 control characters (tab, line feed and carriage return are
    allowed) or lone surrogates; runs of whitespace are collapsed to one space and the ends
    stripped.  The result must contain something visible and be at most
    ``limits.max_query_chars`` characters long (counted after collapsing and stripping).

    Any language, right-to-left text, emoji and stopword-only queries ("the of and") are valid:
    what a query means is the model's business, not validation's.

    Returns:
        the normalised query, or ``None``.

    Raises:
        QueryError: not text, NUL byte, control character, invalid Unicode, empty, or too long.
    """
    if query is None:
        return None
    if not isinstance(query, str):
        raise QueryError(f"query must be text, not {type(query).__name__}")
    bad = _CONTROL.search(query)
    if bad:
        if bad.group() == "\x00":
            raise QueryError(f"query contains a NUL byte (at character {bad.start()}); remove it")
        raise QueryError(
            f"query contains the control character U+{ord(bad.group()):04X} at character {bad.start()}; "
            "only tabs and line breaks are allowed"
        )
    bad = _SURROGATE.search(query)
    if bad:
        raise QueryError(
            f"query is not valid Unicode (lone surrogate U+{ord(bad.group()):04X} at character "
            f"{bad.start()}); send UTF-8 text"
        )
    text = _WHITESPACE.sub(" ", query).strip()
    if not text or all(unicodedata.category(c) in _INVISIBLE_CATEGORIES for c in text):
        raise QueryError(
            "query is empty (or only whitespace); give a few words describing what to crop to, "
            "or give no query for an unconditioned crop"
        )
    if len(text) > limits.max_query_chars:
        raise QueryError(
            f"query is {len(text)} characters long, above the limit of {limits.max_query_chars}; "
            "shorten it (or raise the limit with Limits(max_query_chars=...) or CLIPCROP_MAX_QUERY_CHARS)"
        )
    return text


def _check_max_k(max_k: int) -> None:
    if isinstance(max_k, bool) or not isinstance(max_k, numbers.Integral) or max_k < 1:
        raise ValueError(f"max_k must be an integer >= 1, got {max_k!r}")


def validate_top_k(top_k: int, max_k: int) -> int:
    """Check ``top_k``, the number of crops to return, for library and JSON callers.

    ``top_k`` must be an integer (``int`` or a numpy integer; ``bool``, floats and strings are
    refused: the CLI and the service parse text into ints first) with ``1 <= top_k <= max_k``.  Resolve defaults
    (``None`` meaning "the default") before calling.

    Args:
        top_k: the requested number of crops.
        max_k: the largest allowed value (``Limits.max_top_k``, or the model's number of crops).

    Returns:
        ``top_k`` as a plain ``int``.

    Raises:
        ParameterError: ``top_k`` is not an integer or is out of range.
        ValueError: ``max_k`` itself is not an integer >= 1 (a programming error).
    """
    _check_max_k(max_k)
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
        shown = repr(top_k)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ParameterError(f"top_k must be a whole number between 1 and {max_k}, got {shown}")
    k = int(top_k)
    if not 1 <= k <= max_k:
        raise ParameterError(f"top_k must be between 1 and {max_k}, got {k}")
    return k


def validate_query_pair(query: object, image_query: object) -> None:
    """Refuse a request that gives both a text query and an image query.

    A query counts as given when it is not ``None`` (an empty string is given, and then refused
    by :func:`validate_query`).  Giving neither is valid: an unconditioned crop.

    Raises:
        QueryError: both were given.
    """
    if query is not None and image_query is not None:
        raise QueryError("give either a text query or an image query, not both")
