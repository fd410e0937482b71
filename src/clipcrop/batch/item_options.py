"""The crop options of a batch input beyond ``top_k`` and ``aspect``: ``size``, ``upscale``,
``keep``, ``avoid_box``, ``avoid`` and ``faces`` (torch-free).

A manifest line may set each for itself, the job sets them for every line that does not
(:class:`~clipcrop.batch.config.BatchConfig`). Values come as JSON gives them and are put in one
canonical form (:func:`canonical_options`): only what differs from the defaults, ``size`` as
``"WxH"``, boxes as ``"x0,y0,x1,y1[,w]"`` text, texts as a list. That form is part of an input's
identity (so a resumed job finds its lines) and is recorded in its result line as ``"options"``
(left out when empty, as lines written before these options existed). Checking goes through
:meth:`clipcrop.crop_options.CropOptions.build`, the one check every surface shares.

Boxes are **pixels xyxy of the upright image**.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..crop_options import CropOptions, parse_size
from ..errors import ParameterError

#: the option keys a manifest line (or the job) may set beyond top_k and aspect
OPTION_KEYS = ("size", "upscale", "keep", "avoid_box", "avoid", "faces")


def _shown(value: Any) -> str:
    return json.dumps(value)[:60]


def _box_text(key: str, value: Any) -> str:
    """One box: ``"x0,y0,x1,y1[,w]"`` text or a list of 4 or 5 numbers -> the text form."""
    if isinstance(value, str):
        return ",".join(p.strip() for p in value.split(","))
    if isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        return ",".join(f"{v:g}" for v in value)
    raise ParameterError(f'{key} must be "x0,y0,x1,y1[,w]" or a list of them, got {_shown(value)}')


def _boxes(key: str, value: Any) -> list[str]:
    """A box or a list of boxes (see :func:`_box_text`) -> a list of box texts."""
    if isinstance(value, list) and value and all(isinstance(v, str | list) for v in value):
        return [_box_text(key, v) for v in value]
    return [_box_text(key, value)]


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParameterError(f"{key} must be true or false, got {_shown(value)}")
    return value


def canonical_options(given: dict[str, Any]) -> dict[str, Any]:
    """The canonical form of ``given`` (keys of :data:`OPTION_KEYS`; None values are left out).

    Raises:
        ParameterError: an unknown key or a value of the wrong type (checked further by
            :func:`build_options`).
    """
    out: dict[str, Any] = {}
    for key, value in given.items():
        if key not in OPTION_KEYS:
            raise ParameterError(f"unknown option {_shown(key)}")
        if value is None:
            continue
        if key in ("upscale", "faces"):
            if _flag(key, value):
                out[key] = True
        elif key == "size":
            if not isinstance(value, str | list):
                raise ParameterError(f'size must be "WxH" text or [W, H], got {_shown(value)}')
            wh = parse_size(value)
            if wh is not None:
                out[key] = f"{wh[0]}x{wh[1]}"
        elif key == "avoid":
            texts = [value] if isinstance(value, str) else value
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise ParameterError(f"avoid must be a text or a list of texts, got {_shown(value)}")
            if texts:
                out[key] = list(texts)
        elif value != []:
            out[key] = _boxes(key, value)
    return out


def build_options(top_k: Any, aspect: Any, options: dict[str, Any] | None = None) -> CropOptions:
    """The :class:`~clipcrop.crop_options.CropOptions` of an input (``options`` canonical).

    Raises:
        ParameterError: any bad value, with CropOptions' message.
    """
    opts = dict(options or {})
    return CropOptions.build(
        top_k=top_k,
        aspect_ratio=aspect,
        size=opts.get("size"),
        upscale=bool(opts.get("upscale", False)),
        keep=opts.get("keep", ()),
        avoid_box=opts.get("avoid_box", ()),
        avoid=opts.get("avoid", ()),
        faces=bool(opts.get("faces", False)),
    )


def merged(defaults: dict[str, Any], line: dict[str, Any]) -> dict[str, Any]:
    """The job's canonical options with a line's own values (as given: ``false`` or ``[]`` clear
    the job's) in their place, key by key; None leaves the job's value.

    Raises:
        ParameterError: as :func:`canonical_options`.
    """
    out = {k: v for k, v in defaults.items() if line.get(k) is None}
    out.update(canonical_options(line))
    return {k: out[k] for k in OPTION_KEYS if k in out}


__all__ = ["OPTION_KEYS", "build_options", "canonical_options", "merged"]
