"""Validation of queries and parameters, shared by the library, the CLI and the service.

Each function either returns the cleaned value or raises a documented
:class:`~clipcrop.errors.InputError` subclass whose message says what to change.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import ParameterError, QueryError
from .limits import Limits

_ALLOWED_WHITESPACE = {"\t", "\n", "\r"}
_SPACES = re.compile(r"\s+")


def validate_query(query: str | None, limits: Limits) -> str | None:
    """Clean a text query: None stays None; otherwise whitespace collapsed and stripped.

    Raises:
        QueryError: not a string; contains NUL or other control characters; empty or only
            whitespace; longer than ``limits.max_query_chars`` characters after cleaning.
    """
    if query is None:
        return None
    if not isinstance(query, str):
        raise QueryError(f"query must be text, not {type(query).__name__}")
    if "\x00" in query:
        raise QueryError("query contains a NUL byte")
    for ch in query:
        if ch not in _ALLOWED_WHITESPACE and unicodedata.category(ch) == "Cc":
            raise QueryError(f"query contains the control character U+{ord(ch):04X}")
    text = _SPACES.sub(" ", query).strip()
    if not text:
        raise QueryError("query is empty; give a few words describing what the crop should show, or no query")
    if len(text) > limits.max_query_chars:
        raise QueryError(
            f"query is {len(text)} characters long, above the limit of {limits.max_query_chars} "
            "(Limits.max_query_chars / CLIPCROP_MAX_QUERY_CHARS)"
        )
    return text


def validate_query_pair(query: object, image_query: object) -> None:
    """A text query and an image query are mutually exclusive."""
    if query is not None and image_query is not None:
        raise QueryError("give either a text query or an image query, not both")


def validate_top_k(top_k: object, max_k: int) -> int:
    """``top_k`` must be an int in 1..``max_k`` (bools are refused)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise ParameterError(f"top_k must be a whole number, not {top_k!r}")
    if not 1 <= top_k <= max_k:
        raise ParameterError(f"top_k must be between 1 and {max_k}, got {top_k}")
    return top_k


def parse_top_k(text: str | None, default: int = 5) -> int:
    """``top_k`` from a form field or flag: digits only (range checked by :func:`validate_top_k`)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return default
    value = str(text).strip()
    if not re.fullmatch(r"[+]?\d{1,9}", value):
        raise ParameterError(f"top_k must be a whole number, not {value[:40]!r}")
    return int(value)
