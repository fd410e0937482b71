"""The inputs of a batch job: a folder, a single image, or a JSONL manifest.

A folder is searched recursively for images, sorted, as ``clipcrop crop`` does. A manifest has
one object per line: ``{"image": PATH, "query": TEXT}`` or ``{"image": PATH, "image_query": PATH}``
(or neither: un-conditioned), optionally with ``"top_k": N``, ``"aspect": "W:H"`` (several:
``"1:1,4:5"`` or a list) and the crop options of :mod:`clipcrop.batch.item_options` (``size``,
``upscale``, ``keep``, ``avoid_box``, ``avoid``, ``faces``); any other key, or a bad value, is
that line's error (an error line in the results), never ignored: every value is checked by
:meth:`clipcrop.crop_options.CropOptions.build`, as the CLI and the service check theirs. Relative
paths in a manifest are relative to the manifest's folder. The job's text query (or
``image_query``) applies to every input that has no condition of its own, its ``top_k``,
``aspect`` and options to every input that does not set them (:class:`ItemDefaults`).

An input is identified by ``(image, query, image_query, top_k, aspect, options)``
(:func:`item_key`) as they appear in its result line, the query after the same cleaning the
predictor applies.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ClipCropError, ParameterError
from ..io.result_lines import failed_crop_line
from ..limits import Limits
from ..validation import validate_query, validate_query_pair
from .item_options import OPTION_KEYS, build_options, merged

MANIFEST_SUFFIXES = (".jsonl", ".ndjson", ".json")
#: the keys a manifest line may have; any other key is that line's error
MANIFEST_KEYS = ("image", "query", "image_query", "top_k", "aspect", *OPTION_KEYS)
DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class BatchItem:
    """One input: an image, its condition and crop options; ``error`` when it is known to fail
    before any work. ``top_k`` and ``aspect`` hold the values as given (a bad one stays, for the
    error line), normally an int and a ``W:H`` string (or a list of them) or None; ``options`` the
    other crop options in canonical form (:mod:`clipcrop.batch.item_options`), empty by default."""

    image: str
    query: str | None = None
    image_query: str | None = None
    error: str | None = None
    top_k: Any = DEFAULT_TOP_K
    aspect: Any = None
    options: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return item_key(self.image, self.query, self.image_query, self.top_k, self.aspect, self.options)

    def error_line(self, message: str | None = None) -> dict:
        """The result object of a failed input (as ``clipcrop crop --json``'s, with ``top_k``,
        ``aspect`` and, when any, ``options``)."""
        return failed_crop_line(
            self.image,
            self.query,
            message or self.error or "failed",
            image_query=self.image_query,
            top_k=self.top_k,
            aspect=self.aspect,
            **({"options": self.options} if self.options else {}),
        )


def _hashable(value: Any) -> Any:
    """A manifest value usable in a key (a bad ``top_k`` may be a list or an object)."""
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else value


def item_key(
    image: str,
    query: Any,
    image_query: Any,
    top_k: Any = DEFAULT_TOP_K,
    aspect: Any = None,
    options: dict | None = None,
) -> tuple:
    """The identity of an input: (image, query, image_query, top_k, aspect), with its options
    (canonical, as JSON) last when it has any: keys of inputs without stay what they were."""
    key = (image, _hashable(query), _hashable(image_query), _hashable(top_k), _hashable(aspect))
    return key + (json.dumps(options, sort_keys=True),) if options else key


def result_key(obj: dict) -> tuple:
    """The identity of a result line; lines written before ``top_k``/``aspect`` were recorded had
    the defaults then fixed (5 crops, any aspect ratio), lines without ``options`` had none."""
    return item_key(
        obj["image"],
        obj.get("query"),
        obj.get("image_query"),
        obj.get("top_k", DEFAULT_TOP_K),
        obj.get("aspect"),
        obj.get("options"),
    )


@dataclass(frozen=True)
class ItemDefaults:
    """What the job gives every input that does not set it itself (besides the text query).

    Attributes:
        image_query: reference image for inputs with neither ``query`` nor ``image_query``.
        top_k, aspect: crops per image and ratio, and the ratio (``W:H``, several with commas, or
            None: any).
        options: the other crop options, canonical (:func:`~clipcrop.batch.item_options.canonical_options`).
        max_top_k: the model's largest ``top_k`` when known before it loads (its ``config.json``);
            None: checked by the workers, where a line asking for more gets that line's error.
    """

    image_query: str | None = None
    top_k: int = DEFAULT_TOP_K
    aspect: str | None = None
    max_top_k: int | None = None
    options: dict = field(default_factory=dict)


def check_options(top_k: Any, aspect: Any, max_top_k: int | None = None, options: dict | None = None) -> None:
    """Raise ParameterError unless ``top_k`` is a whole number >= 1 (<= ``max_top_k`` when known),
    ``aspect`` is None, ``"free"``, ``"W:H"`` text (several with commas, or a list of them) or a
    positive number (width / height), and ``options`` (canonical) pass
    :meth:`~clipcrop.crop_options.CropOptions.build` together with them."""
    from ..validation import validate_top_k

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ParameterError(f"top_k must be a whole number of at least 1, got {json.dumps(top_k)[:40]}")
    if max_top_k is not None:
        validate_top_k(top_k, max_top_k)
    listed = isinstance(aspect, list) and aspect and all(isinstance(a, str) for a in aspect)
    if (
        not listed
        and aspect is not None
        and (isinstance(aspect, bool) or not isinstance(aspect, str | int | float))
    ):
        raise ParameterError(
            f'aspect must be text such as "16:9", "1:1,4:5" (or "free") or a list of such texts, '
            f"got {json.dumps(aspect)[:40]}"
        )
    build_options(top_k, aspect, options)


def make_item(
    image: str,
    query: str | None,
    image_query: str | None,
    limits: Limits,
    error: str | None = None,
    top_k: Any = DEFAULT_TOP_K,
    aspect: Any = None,
    max_top_k: int | None = None,
    options: dict | None = None,
) -> BatchItem:
    """An item whose query is cleaned as the predictor will clean it (so keys match results), with
    a bad query, condition or crop option as its error."""
    if error is None:
        try:
            validate_query_pair(query, image_query)
            query = validate_query(query, limits)
            check_options(top_k, aspect, max_top_k, options)
        except ClipCropError as exc:
            error = f"{image}: {exc}"
            if not isinstance(query, str | type(None)):
                query = str(query)
    return BatchItem(
        image=image,
        query=query,
        image_query=image_query,
        error=error,
        top_k=top_k,
        aspect=aspect,
        options=dict(options or {}),
    )


def _manifest_item(
    obj: Any,
    where: str,
    resolve: Callable[[str], str],
    default_query: str | None,
    limits: Limits,
    defaults: ItemDefaults,
) -> BatchItem:
    """The item of one parsed manifest line (an error item for anything wrong in it)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("image"), str) or not obj["image"]:
        return BatchItem(image=where, error=f'{where}: each line needs "image": a path')
    image = resolve(obj["image"])
    unknown = [k for k in obj if k not in MANIFEST_KEYS]
    if unknown:
        return BatchItem(
            image=image,
            error=f"{where}: unknown key {json.dumps(unknown[0])[:60]} (a line may have: {', '.join(MANIFEST_KEYS)})",
        )
    query = obj.get("query")
    image_query = obj.get("image_query")
    if image_query is not None and not isinstance(image_query, str):
        return BatchItem(image=image, error=f'{where}: "image_query" must be a path, not {image_query!r}')
    if image_query is not None:
        image_query = resolve(image_query)
    if query is None and image_query is None:
        query, image_query = default_query, defaults.image_query
    top_k = obj["top_k"] if obj.get("top_k") is not None else defaults.top_k
    aspect = obj["aspect"] if obj.get("aspect") is not None else defaults.aspect
    given = {k: obj[k] for k in OPTION_KEYS if k in obj}
    try:
        options = merged(defaults.options, given)
    except ClipCropError as exc:  # the values as given stay in its key: bad lines stay apart
        error = f"{where}: {image}: {exc}"
        return BatchItem(image=image, error=error, top_k=top_k, aspect=aspect, options=given)
    item = make_item(image, query, image_query, limits, None, top_k, aspect, defaults.max_top_k, options)
    if item.error is not None:  # name the line, as for the other line errors
        item = dataclasses.replace(item, error=f"{where}: {item.error}")
    return item


def read_manifest(
    path: str | os.PathLike,
    default_query: str | None,
    limits: Limits,
    defaults: ItemDefaults | None = None,
) -> list[BatchItem]:
    """Items of a JSONL manifest; a malformed line becomes an item with an error (never dropped).

    Each line: ``{"image": PATH, "query": TEXT | null, "image_query": PATH | null, "top_k": N,
    "aspect": "W:H", "size": "WxH", "upscale": BOOL, "keep": BOX | [BOX...], "avoid_box": BOX |
    [BOX...], "avoid": TEXT | [TEXT...], "faces": BOOL}`` (BOX: ``"x0,y0,x1,y1[,w]"`` or a list of
    4 or 5 numbers, pixels), everything but ``image`` optional; relative paths are relative to the
    manifest's folder; ``default_query`` (or ``defaults.image_query``) applies to lines with
    neither ``query`` nor ``image_query``, ``defaults.top_k``/``aspect``/``options`` to lines
    without (or with null; ``false`` and ``[]`` clear a job's option). An unknown key or a bad value is that line's error. Blank lines are ignored.
    """
    defaults = defaults or ItemDefaults()
    path = Path(path)
    base = path.parent
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError(f"{path}: cannot read the manifest ({exc})") from exc

    def resolve(p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(str(base), p) if str(base) != "." else p

    items: list[BatchItem] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            items.append(BatchItem(image=where, error=f"{where}: not valid JSON ({exc})"))
            continue
        items.append(_manifest_item(obj, where, resolve, default_query, limits, defaults))
    return items


def collect_items(
    source: str | os.PathLike,
    default_query: str | None,
    limits: Limits,
    defaults: ItemDefaults | None = None,
) -> list[BatchItem]:
    """Items of a folder (recursive, images only, sorted), a manifest or a single image."""
    from ..io.images import is_image_path
    from ..io.inputs import expand_inputs

    d = defaults or ItemDefaults()
    p = Path(source)
    if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
        return read_manifest(p, default_query, limits, d)
    if p.is_dir() or (p.is_file() and is_image_path(p)):
        query, image_query = (None, d.image_query) if d.image_query is not None else (default_query, None)
        return [
            make_item(
                it.path, query, image_query, limits, it.error, d.top_k, d.aspect, d.max_top_k, d.options
            )
            for it in expand_inputs([str(p)])
        ]
    if p.exists():
        raise ParameterError(
            f"{source}: not a folder, a JSONL manifest ({', '.join(MANIFEST_SUFFIXES)}) or an image"
        )
    raise ParameterError(f"{source}: no such file or folder")
