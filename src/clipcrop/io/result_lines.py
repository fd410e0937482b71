"""The JSON object of an input that failed, beside :meth:`CropResult.to_dict`'s for one that
worked: ``clipcrop crop --json`` prints it and ``clipcrop batch`` writes it to its results file,
so both build it here (no torch import: the batch driver writes these lines without a model).

The shape is the success object's with no size and no crops: ``{"image", "width": null,
"height": null, "query", "crops": [], "error": MESSAGE}``, plus ``image_query`` when the input had
one; ``query`` is the text *after cleaning* (:func:`clipcrop.validation.validate_query`), as in
the success objects, so that a consumer can match the two.
"""

from __future__ import annotations

from typing import Any


def failed_crop_line(image: str, query: str | None, message: str, *, image_query: str | None = None,
                     **extra: Any) -> dict:  # fmt: skip
    """The result object of ``image``, which failed with ``message``; ``extra`` keys go last
    (``clipcrop batch`` records ``top_k`` and ``aspect``)."""
    out: dict[str, Any] = {
        "image": image,
        "width": None,
        "height": None,
        "query": query,
        "crops": [],
        "error": message,
    }
    if image_query is not None:
        out["image_query"] = image_query
    out.update(extra)
    return out


__all__ = ["failed_crop_line"]
