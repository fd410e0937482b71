"""Batch cropping at scale on Ray Data, resumable after any interruption.

``run_batch(BatchConfig(...))`` crops every input of a folder or a JSONL manifest and appends one
JSON line per input to a results file; ``clipcrop batch`` is its command line.

Inputs
    A folder (searched recursively for images, sorted, as ``clipcrop crop`` does), a single image,
    or a JSONL manifest with one object per line: ``{"image": PATH, "query": TEXT}`` or
    ``{"image": PATH, "image_query": PATH}`` (or neither: un-conditioned), optionally with
    ``"top_k": N`` and ``"aspect": "W:H"``; any other key, or a bad value, is that line's error
    (an error line in the results), never ignored. Relative paths in a manifest are relative to the
    manifest's folder. ``BatchConfig.query`` (or ``image_query``) applies to every input that has
    no condition of its own, ``BatchConfig.top_k`` and ``aspect_ratio`` to every input that does
    not set them.

Results
    One line per input, the object ``clipcrop crop --json`` prints (``CropResult.to_dict()``); an
    input that fails gets ``"error": MESSAGE`` and ``"crops": []`` and the job goes on. Every
    line also records ``top_k`` and ``aspect``, and with ``crops_out`` the pictures written
    (``"crop_files"``, see :mod:`clipcrop.batch.outputs`). Lines are
    written in *completion* order, not input order (sort by ``image`` if order matters); every
    input appears exactly once.

Exactly once, resumable
    An input is identified by ``(image, query, image_query, top_k, aspect)`` as they appear in its
    result line (query after the same cleaning the predictor applies; a line without ``top_k`` or
    ``aspect``, from an older version, has 5 and null), so a new ``--top-k`` or ``--aspect``
    makes new inputs. At start the results file is read: a
    torn last line left by a kill is cut away (or completed, when only its newline is missing),
    and every input that already has a line, success or error, is skipped (so a failed input is
    not retried; delete its line to retry it). Only the rest goes to Ray, in input order. Results
    come back one Ray output block at a time (blocks of ``max(batch_size, 4)`` rows, rounded up to a
    multiple of ``batch_size``); each block's lines are appended whole with a single ``write`` and
    ``fsync``-ed before the next block, so a kill at any moment leaves a file whose complete lines
    are all valid, and only the blocks in flight at the kill are computed again: at most
    ``MAX_TASKS_PER_ACTOR`` per worker plus the finished ones the driver has not written yet. A key seen twice
    within a run (a retried Ray task) is written once.

Execution
    Locally by default: an embedded Ray instance (``ray.init(address="local")``, no dashboard),
    shut down at the end. With ``ray_address`` (``"auto"`` or ``HOST:PORT``) the job runs on that
    cluster; image paths must then be readable on every node (shared storage) and ClipCrop must be
    installed there. ``map_batches`` runs a pool of ``num_workers`` actors, each loading the model
    once (``ClipCrop.from_pretrained``) and keeping prepared conditions (keywords and text or
    image-query embeddings) for the queries it has seen. When the cluster has GPUs and the device
    allows it (``auto``/``cuda``) each actor gets a GPU (a share of one when there are more actors
    than GPUs). On CPU the actors take a fraction of a CPU each so that a small machine never
    deadlocks, and the local machine's cores are split between them for torch.

``CLIPCROP_BATCH_TRACE=FILE`` makes every worker append ``[image, query, image_query, pid, time]``
(one JSON line) for each input it processes to FILE: a debugging aid to measure how much work a
resume repeats.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ClipCropError, ModelLoadError, OutputExistsError, ParameterError
from ..io.atomic_files import FILE_MODE, fsync_dir, write_atomic
from ..io.output_names import crop_path
from ..limits import Limits
from ..validation import validate_query, validate_query_pair
from .outputs import existing_targets, plan_stems

logger = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".jsonl", ".ndjson", ".json")
#: the keys a manifest line may have; any other key is that line's error
MANIFEST_KEYS = ("image", "query", "image_query", "top_k", "aspect")
DEFAULT_TOP_K = 5
TRACE_ENV = "CLIPCROP_BATCH_TRACE"
#: smallest Ray block (rows): the unit of checkpointing, so at most a few blocks are redone after a kill
MIN_BLOCK_ROWS = 4
#: blocks queued on one worker at a time: two keep it busy while the next block is shipped, and
#: bound what a kill throws away (pinned here, since Ray's default may change)
MAX_TASKS_PER_ACTOR = 2
#: environment variables the actors need to see like the driver does (cluster nodes do not inherit them)
_FORWARDED_ENV_PREFIXES = ("CLIPCROP_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")


# ---------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class BatchItem:
    """One input: an image, its condition and crop options; ``error`` when it is known to fail
    before any work. ``top_k`` and ``aspect`` hold the values as given (a bad one stays, for the
    error line), normally an int and a ``W:H`` string or None."""

    image: str
    query: str | None = None
    image_query: str | None = None
    error: str | None = None
    top_k: Any = DEFAULT_TOP_K
    aspect: Any = None

    @property
    def key(self) -> tuple:
        return item_key(self.image, self.query, self.image_query, self.top_k, self.aspect)

    def error_line(self, message: str | None = None) -> dict:
        """The result object of a failed input (same shape as ``clipcrop crop --json``)."""
        return error_result(
            self.image,
            self.query,
            self.image_query,
            message or self.error or "failed",
            self.top_k,
            self.aspect,
        )


def error_result(
    image: str,
    query: str | None,
    image_query: str | None,
    message: str,
    top_k: Any = DEFAULT_TOP_K,
    aspect: Any = None,
) -> dict:
    out = {"image": image, "width": None, "height": None, "query": query, "crops": [], "error": message}
    if image_query is not None:
        out["image_query"] = image_query
    out.update(top_k=top_k, aspect=aspect)
    return out


def _hashable(value: Any) -> Any:
    """A manifest value usable in a key (a bad ``top_k`` may be a list or an object)."""
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else value


def item_key(
    image: str, query: Any, image_query: Any, top_k: Any = DEFAULT_TOP_K, aspect: Any = None
) -> tuple:
    """The identity of an input: (image, query, image_query, top_k, aspect)."""
    return (image, _hashable(query), _hashable(image_query), _hashable(top_k), _hashable(aspect))


def result_key(obj: dict) -> tuple:
    """The identity of a result line; lines written before ``top_k``/``aspect`` were recorded had
    the defaults then fixed (5 crops, any aspect ratio)."""
    return item_key(
        obj["image"],
        obj.get("query"),
        obj.get("image_query"),
        obj.get("top_k", DEFAULT_TOP_K),
        obj.get("aspect"),
    )


@dataclass(frozen=True)
class ItemDefaults:
    """What the job gives every input that does not set it itself (besides the text query).

    Attributes:
        image_query: reference image for inputs with neither ``query`` nor ``image_query``.
        top_k, aspect: crops per image and their aspect ratio (``W:H`` or None: any).
        max_top_k: the model's largest ``top_k`` when known before it loads (its ``config.json``);
            None: checked by the workers, where a line asking for more gets that line's error.
    """

    image_query: str | None = None
    top_k: int = DEFAULT_TOP_K
    aspect: str | None = None
    max_top_k: int | None = None


def check_options(top_k: Any, aspect: Any, max_top_k: int | None = None) -> None:
    """Raise ParameterError unless ``top_k`` is a whole number >= 1 (<= ``max_top_k`` when known)
    and ``aspect`` is None, ``"free"``, ``"W:H"`` text or a positive number (width / height)."""
    from ..ops.aspect import parse_aspect
    from ..validation import validate_top_k

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ParameterError(f"top_k must be a whole number of at least 1, got {json.dumps(top_k)[:40]}")
    if max_top_k is not None:
        validate_top_k(top_k, max_top_k)
    if aspect is not None and (isinstance(aspect, bool) or not isinstance(aspect, str | int | float)):
        raise ParameterError(f'aspect must be text such as "16:9" (or "free"), got {json.dumps(aspect)[:40]}')
    parse_aspect(aspect)


def make_item(
    image: str,
    query: str | None,
    image_query: str | None,
    limits: Limits,
    error: str | None = None,
    top_k: Any = DEFAULT_TOP_K,
    aspect: Any = None,
    max_top_k: int | None = None,
) -> BatchItem:
    """An item whose query is cleaned as the predictor will clean it (so keys match results), with
    a bad query, condition or crop option as its error."""
    if error is None:
        try:
            validate_query_pair(query, image_query)
            query = validate_query(query, limits)
            check_options(top_k, aspect, max_top_k)
        except ClipCropError as exc:
            error = f"{image}: {exc}"
            if not isinstance(query, str | type(None)):
                query = str(query)
    return BatchItem(
        image=image, query=query, image_query=image_query, error=error, top_k=top_k, aspect=aspect
    )


def _manifest_item(
    obj: Any, where: str, resolve: Any, default_query: str | None, limits: Limits, defaults: ItemDefaults
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
    item = make_item(image, query, image_query, limits, None, top_k, aspect, defaults.max_top_k)
    if item.error is not None:  # name the line, as for the other line errors
        item = BatchItem(
            item.image, item.query, item.image_query, f"{where}: {item.error}", item.top_k, item.aspect
        )
    return item


def read_manifest(
    path: str | os.PathLike,
    default_query: str | None,
    limits: Limits,
    defaults: ItemDefaults | None = None,
) -> list[BatchItem]:
    """Items of a JSONL manifest; a malformed line becomes an item with an error (never dropped).

    Each line: ``{"image": PATH, "query": TEXT | null, "image_query": PATH | null, "top_k": N,
    "aspect": "W:H"}``, everything but ``image`` optional; relative paths are relative to the
    manifest's folder; ``default_query`` (or ``defaults.image_query``) applies to lines with
    neither ``query`` nor ``image_query``, ``defaults.top_k``/``aspect`` to lines without (or with
    null). An unknown key or a bad value is that line's error. Blank lines are ignored.
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
            make_item(it.path, query, image_query, limits, it.error, d.top_k, d.aspect, d.max_top_k)
            for it in expand_inputs([str(p)])
        ]
    if p.exists():
        raise ParameterError(
            f"{source}: not a folder, a JSONL manifest ({', '.join(MANIFEST_SUFFIXES)}) or an image"
        )
    raise ParameterError(f"{source}: no such file or folder")


# ---------------------------------------------------------------------------------------- results file
@dataclass
class ResultsState:
    """What an existing results file already holds."""

    done: set = field(default_factory=set)  #: keys with a line (success or error)
    failed: set = field(default_factory=set)  #: keys whose line has an error
    lines: int = 0
    torn_bytes: int = 0  #: bytes of a torn last line that were cut away
    completed_tail: bool = False  #: the last line only lacked its newline, which was added
    dropped_lines: int = 0  #: complete lines that were not valid results (file rewritten without them)


def _parse_result(raw: bytes) -> dict | None:
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("image"), str) or "error" not in obj:
        return None
    return obj


def repair_results(path: str | os.PathLike) -> ResultsState:
    """Make ``path`` a file of whole, valid result lines and say which inputs it holds.

    A torn last line (a kill during a write) is cut away, or finished with its newline when the
    object itself is complete. Complete lines that are not result objects (which whole-line appends
    never produce, but a crashed disk or a hand edit might) are dropped by rewriting the file
    atomically (temporary file, ``fsync``, rename). A missing file is an empty state.
    """
    path = Path(path)
    state = ResultsState()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return state
    cut = data.rfind(b"\n") + 1  # end of the last complete line (0: none)
    tail = data[cut:]
    body = data[:cut]
    if tail:
        obj = _parse_result(tail) if tail.strip() else None
        with open(path, "r+b") as fh:
            if obj is not None:  # only the newline is missing: keep the line
                fh.seek(0, os.SEEK_END)
                fh.write(b"\n")
                state.completed_tail = True
                body = data + b"\n"
            else:
                fh.truncate(cut)
                state.torn_bytes = len(tail)
            fh.flush()
            os.fsync(fh.fileno())
    kept: list[bytes] = []
    for raw in body.split(b"\n")[:-1]:
        obj = _parse_result(raw) if raw.strip() else None
        if obj is None:
            state.dropped_lines += 1
            continue
        kept.append(raw)
        key = result_key(obj)
        state.done.add(key)
        if obj.get("error"):
            state.failed.add(key)
        else:
            state.failed.discard(key)
    state.lines = len(kept)
    if state.dropped_lines:
        write_atomic(path, b"".join(line + b"\n" for line in kept))
    return state


class ResultsWriter:
    """Appends whole lines to the results file; :meth:`append` is one ``write`` plus ``fsync``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._fd = os.open(str(self.path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        if created:
            fsync_dir(self.path.parent)

    def append(self, objects: Sequence[dict]) -> None:
        if not objects:
            return
        data = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects).encode("utf-8")
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- plan
@dataclass
class BatchPlan:
    """Inputs split into those already in the results and those still to do."""

    items: list[BatchItem]
    pending: list[BatchItem]
    skipped: int
    skipped_failed: int
    duplicates: int
    state: ResultsState


def plan_batch(items: Sequence[BatchItem], results: str | os.PathLike) -> BatchPlan:
    """Repair the results file, then keep the inputs that have no line in it yet."""
    unique, seen = [], set()
    for it in items:
        if it.key not in seen:
            seen.add(it.key)
            unique.append(it)
    state = repair_results(results)
    pending = [it for it in unique if it.key not in state.done]
    done_here = [it for it in unique if it.key in state.done]
    return BatchPlan(
        items=unique,
        pending=pending,
        skipped=len(done_here),
        skipped_failed=sum(1 for it in done_here if it.key in state.failed),
        duplicates=len(items) - len(unique),
        state=state,
    )


# ---------------------------------------------------------------------------------------- config
@dataclass
class BatchConfig:
    """A batch job.

    Attributes:
        input: folder, JSONL manifest or image.
        out: results file (JSONL), appended to and resumed from.
        query: text query for every input that has no condition of its own.
        model, device, precision, quantize: as :meth:`ClipCrop.from_pretrained` (device ``auto``
            uses a GPU when the worker has one).
        backbone: for a trained checkpoint, the OWL-ViT folder or Hub id to load instead of the
            one it names (``backbone=`` of :meth:`ClipCrop.from_pretrained`).
        max_megapixels: largest image accepted (default from ``Limits``/environment).
        image_query: reference image for every input that has no condition of its own (instead
            of ``query``).
        top_k, aspect_ratio: as :meth:`ClipCrop.crop`, for every input that does not set its own
            (manifest keys ``top_k`` and ``aspect``).
        crops_out: folder to write each input's crops to (``<path>_crop<k>.jpg``, see
            :mod:`clipcrop.batch.outputs`); None writes results only.
        overwrite: replace pictures that exist in ``crops_out`` (otherwise a new job refuses them
            before Ray starts; a resumed job replaces the ones its interrupted run left).
        strip_metadata, strip_icc: write crops without the source's EXIF / ICC profile.
        ray_address: None for a local embedded Ray; ``"auto"`` or ``HOST:PORT`` for a cluster.
        num_workers: model actors (default: one per GPU when GPUs are used, else 1).
        batch_size: images per backbone call and per Ray batch.
        num_cpus: CPUs of the local Ray instance (default: all).
        progress: Ray Data progress bars on stderr (default: when stderr is a terminal).
        verbose: forward worker logs and Ray's own messages.
    """

    input: str
    out: str
    query: str | None = None
    model: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    quantize: str | None = None
    backbone: str | None = None
    max_megapixels: float | None = None
    top_k: int = DEFAULT_TOP_K
    aspect_ratio: str | None = None
    image_query: str | None = None
    crops_out: str | None = None
    overwrite: bool = False
    strip_metadata: bool = False
    strip_icc: bool = False
    ray_address: str | None = None
    num_workers: int | None = None
    batch_size: int = 1
    num_cpus: int | None = None
    progress: bool | None = None
    verbose: int = 0


@dataclass
class BatchSummary:
    """What a run did. ``failed`` counts this run's failures, ``skipped_failed`` earlier ones."""

    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_failed: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    #: seconds from the first result to the last (throughput without Ray and model start-up)
    steady_seconds: float = 0.0
    steady_count: int = 0
    out: str = ""

    @property
    def processed(self) -> int:
        return self.done + self.failed

    @property
    def images_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_images_per_s(self) -> float:
        return self.steady_count / self.steady_seconds if self.steady_seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """1 when any input of the job has an error line (this run or an earlier one), else 0."""
        return 1 if self.failed or self.skipped_failed else 0

    def line(self) -> str:
        extra = f" ({self.skipped_failed} with errors)" if self.skipped_failed else ""
        dup = f", {self.duplicates} duplicate input(s) ignored" if self.duplicates else ""
        steady = (
            f", {self.steady_images_per_s:.2f}/s after start-up"
            if self.steady_count and self.steady_seconds
            else ""
        )
        return (
            f"clipcrop batch: {self.done} done, {self.failed} failed, {self.skipped} skipped{extra} "
            f"of {self.total} inputs{dup}; {self.processed} in {self.seconds:.1f} s = "
            f"{self.images_per_s:.2f} images/s{steady} -> {self.out}"
        )


# ---------------------------------------------------------------------------------------- worker
class CropWorker:
    """Ray Data callable class: loads the model once, crops a batch of items into result lines.

    Rows carry ``item`` (JSON ``[image, query, image_query, top_k, aspect]``; the last two may be
    left out, then the worker's ``top_k``/``aspect_ratio`` apply), optionally ``paths`` (files to
    open) and ``crops`` (JSON: the absolute ``DIR/<path>`` to write ``_crop<k>.jpg`` pictures to,
    or null); the output rows carry ``key`` (the same JSON), ``line`` (the result object as JSON)
    and ``failed``. Nothing raised for one input escapes: it becomes that input's error line.
    ``pictures``: ``strip_metadata``, ``strip_icc``, ``overwrite`` for the crops written.
    """

    def __init__(
        self,
        model: str | None,
        device: str,
        precision: str,
        quantize: str | None,
        limits: Limits,
        top_k: int,
        aspect_ratio: str | None,
        num_threads: int | None = None,
        env: dict[str, str] | None = None,
        driver_pid: int | None = None,
        pictures: dict | None = None,
        backbone: str | None = None,
    ) -> None:
        for k, v in (env or {}).items():
            os.environ.setdefault(k, v)
        import torch

        from ..predictor import ClipCrop

        if num_threads:
            torch.set_num_threads(num_threads)
        for name in ("transformers", "huggingface_hub"):
            logging.getLogger(name).setLevel(logging.ERROR)
        if device in ("auto", "cuda") or device.startswith("cuda:"):
            # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU(s): the first visible one is ours
            device = "cuda" if torch.cuda.is_available() else ("cpu" if device == "auto" else device)
        self.cc = ClipCrop.from_pretrained(
            model, device=device, precision=precision, quantize=quantize, limits=limits, backbone=backbone
        )
        self.top_k = top_k
        self.aspect_ratio = aspect_ratio
        self.pictures = dict(pictures or {})
        self._conditions: OrderedDict = OrderedDict()
        self._trace = os.environ.get(TRACE_ENV)
        self._driver_pid = driver_pid

    def _condition(self, query: str | None, image_query: str | None, image_query_path: str | None = None):
        key = (query, image_query)
        cond = self._conditions.get(key)
        if cond is None:
            source = None
            if image_query is not None:
                from ..io.images import load_image

                source = load_image(image_query_path or image_query, self.cc.limits, name=image_query)
            cond = self.cc.prepare_condition(query, source)
            self._conditions[key] = cond
            while len(self._conditions) > 512:
                self._conditions.popitem(last=False)
        else:
            self._conditions.move_to_end(key)
        return cond

    def crop_items(
        self,
        items: Sequence[Sequence[Any]],
        paths: Sequence[tuple[str, str | None]] | None = None,
        crops: Sequence[str | None] | None = None,
    ) -> list[dict]:
        """Result objects for ``(image, query, image_query[, top_k, aspect])`` items, in order.

        ``paths`` optionally gives the files to open, ``(image, image_query)`` per item (absolute
        paths, for workers whose working folder is not the driver's); results keep the names.
        ``crops`` optionally gives per item where to write its crop pictures (see the class).
        """
        from ..io.images import load_image

        full = [(*it, self.top_k, self.aspect_ratio)[:5] for it in items]
        results: list[dict | None] = [None] * len(items)
        ready = []  # (index, loaded image, condition)
        for i, (image, query, image_query, top_k, aspect) in enumerate(full):
            image_path, image_query_path = paths[i] if paths is not None else (image, image_query)
            try:
                cond = self._condition(query, image_query, image_query_path)
                ready.append((i, load_image(image_path, self.cc.limits, name=image), cond))
            except Exception as exc:  # noqa: BLE001 - one input never kills the job
                results[i] = error_result(image, query, image_query, _message(image, exc), top_k, aspect)
        encoded = None
        if len(ready) > 1:
            try:
                encoded = self.cc.encode_batch([li for _, li, _ in ready])
            except Exception:  # noqa: BLE001 - retry one by one to isolate the failing input
                encoded = None
        for n, (i, li, cond) in enumerate(ready):
            image, query, image_query, top_k, aspect = full[i]
            try:
                enc = encoded[n] if encoded is not None else self.cc.encode_batch([li])[0]
                res = self.cc.crop_encoded(enc, cond, top_k=top_k, aspect_ratio=aspect)
                if crops is not None and crops[i]:
                    self._write(li, res, paths[i][0] if paths is not None else image, crops[i])
                results[i] = {**res.to_dict(), "top_k": top_k, "aspect": aspect}
            except Exception as exc:  # noqa: BLE001
                results[i] = error_result(image, query, image_query, _message(image, exc), top_k, aspect)
        self._append_trace(items)
        return [r for r in results if r is not None]

    def _write(self, loaded: Any, result: Any, image_path: str, base: str) -> None:
        """Write the crops of one input at full resolution (decoded again when it was reduced)."""
        from ..io.images import load_image
        from .outputs import write_crops

        full = loaded
        if loaded.image.size != (loaded.width, loaded.height):
            full = load_image(image_path, self.cc.limits, reduce=False, name=loaded.name)
        write_crops(full, result, base, self.pictures)

    def _append_trace(self, items: Sequence[Sequence[Any]]) -> None:
        if not self._trace:
            return
        try:
            with open(self._trace, "a", encoding="utf-8") as fh:
                stamp = [os.getpid(), round(time.time(), 3)]
                fh.write("".join(json.dumps([*it[:3], *stamp]) + "\n" for it in items))
        except OSError as exc:  # a debugging aid never fails the job
            logger.warning("%s: cannot append the trace (%s)", self._trace, exc)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        if self._driver_pid is not None and not _pid_alive(self._driver_pid):
            # local Ray whose driver was killed (kill -9): stop now instead of finishing the queued
            # batches whose results nobody will write
            os._exit(1)

        keys = [str(s) for s in batch["item"]]
        items = [tuple(json.loads(k)) for k in keys]
        paths = [tuple(json.loads(str(p))) for p in batch["paths"]] if "paths" in batch else None
        crops = [json.loads(str(c)) for c in batch["crops"]] if "crops" in batch else None
        results = self.crop_items(items, paths, crops)  # type: ignore[arg-type]
        return {
            "key": np.array(keys, dtype=object),
            "line": np.array([json.dumps(r, ensure_ascii=False) for r in results], dtype=object),
            "failed": np.array([r["error"] is not None for r in results], dtype=bool),
        }


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` (on this machine) still runs; a zombie counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _message(image: str, exc: Exception) -> str:
    if isinstance(exc, ClipCropError):
        return str(exc)
    return f"{image}: {type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------- driver
def run_batch(config: BatchConfig) -> BatchSummary:
    """Run (or resume) a batch job; returns its summary (the caller prints it).

    Raises:
        ParameterError: bad input path or settings (before Ray starts).
        ClipCropError: the job could not run (e.g. the model failed to load in the workers);
            results written so far are kept and a re-run resumes from them.
    """
    t0 = time.perf_counter()
    if config.batch_size < 1:
        raise ParameterError("--batch-size must be at least 1")
    if config.num_workers is not None and config.num_workers < 1:
        raise ParameterError("--num-workers must be at least 1")
    limits = Limits.from_env(max_pixels=int(config.max_megapixels * 1e6) if config.max_megapixels else None)
    out = Path(config.out)
    if out.is_dir():
        raise ParameterError(f"--out {out}: is a folder; give the results file (JSONL)")
    if config.ray_address is None:
        _check_local_model(config.model)
    items = _job_items(config, limits)
    fresh = not out.exists() or out.stat().st_size == 0  # a new job, not a resumed one
    stems = _crop_stems(config, items, fresh)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_results(out)  # one job per results file, or lines could be written twice
    try:
        plan = plan_batch(items, out)
        if stems and not fresh and not config.overwrite:
            left = existing_targets(plan.pending, stems, config.crops_out or "")
            if left:
                logger.warning(
                    "replacing %d picture(s) left in %s by the interrupted run", len(left), config.crops_out
                )
        if plan.state.dropped_lines:  # the repair replaced the file: hold the lock on the new one
            lock, old = _lock_results(out), lock
            os.close(old)
            logger.warning(
                "%s: dropped %d line(s) that were not valid results", out, plan.state.dropped_lines
            )
        if plan.state.torn_bytes:
            logger.warning(
                "%s: cut away a torn last line (%d bytes) left by an interruption", out, plan.state.torn_bytes
            )
        summary = BatchSummary(
            total=len(plan.items),
            skipped=plan.skipped,
            skipped_failed=plan.skipped_failed,
            duplicates=plan.duplicates,
            out=str(out),
        )
        with ResultsWriter(out) as writer:
            known = [it for it in plan.pending if it.error is not None]
            writer.append([it.error_line() for it in known])
            summary.failed += len(known)
            todo = [it for it in plan.pending if it.error is None]
            if todo:
                _run_on_ray(
                    config, limits, todo, writer, summary, stems, replace=config.overwrite or not fresh
                )
    finally:
        os.close(lock)
    summary.seconds = time.perf_counter() - t0
    return summary


def _job_items(config: BatchConfig, limits: Limits) -> list[BatchItem]:
    """The job's inputs, every job-wide setting checked first (ParameterError before Ray starts)."""
    validate_query_pair(config.query, config.image_query)
    validate_query(config.query, limits)
    if config.image_query is not None and not Path(config.image_query).is_file():
        raise ParameterError(f"--image-query {config.image_query}: no such file")
    if (config.strip_metadata or config.strip_icc) and not config.crops_out:
        raise ParameterError(
            "--strip-metadata and --strip-icc need --crops-out DIR, the folder crops are written to"
        )
    if config.crops_out and Path(config.crops_out).exists() and not Path(config.crops_out).is_dir():
        raise ParameterError(f"--crops-out {config.crops_out}: is a file; give the folder to write crops to")
    max_k = _known_max_top_k(config, limits)
    check_options(config.top_k, config.aspect_ratio, max_k)
    defaults = ItemDefaults(config.image_query, config.top_k, config.aspect_ratio, max_k)
    return collect_items(config.input, config.query, limits, defaults)


def _known_max_top_k(config: BatchConfig, limits: Limits) -> int | None:
    """The model's largest ``top_k`` if its ``config.json`` can be read here, else None."""
    from ..model_source import looks_local, max_top_k, model_config, model_name

    name = model_name(config.model)
    if config.ray_address is not None and looks_local(name) and not Path(name).expanduser().exists():
        return None  # a folder on the cluster's machines
    try:
        found = model_config(name)
    except ClipCropError:
        return None  # reported when the model loads
    return max_top_k(found, limits) if found is not None else None


def _crop_stems(config: BatchConfig, items: list[BatchItem], fresh: bool) -> dict:
    """Names of the crop pictures (none without ``crops_out``); a new job refuses pictures that
    exist unless ``overwrite``, before anything is written."""
    if not config.crops_out:
        return {}
    stems = plan_stems(items, config.input)
    if fresh and not config.overwrite:
        found = existing_targets(items, stems, config.crops_out)
        if found:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise OutputExistsError(
                f"{found[0]} already exists{more}; pass --overwrite to replace, or choose another --crops-out"
            )
    return stems


def _lock_results(path: Path) -> int:
    """An exclusive ``flock`` on the results file (released by the OS when the process dies)."""
    created = not path.exists()
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, FILE_MODE)
    if created:
        fsync_dir(path.parent)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no protection against a second job
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ClipCropError(
            f"{path}: another clipcrop batch job is writing to this results file; wait for it or stop it"
        ) from None
    return fd


def _run_on_ray(
    config: BatchConfig,
    limits: Limits,
    todo: list[BatchItem],
    writer: ResultsWriter,
    summary: BatchSummary,
    stems: dict | None = None,
    *,
    replace: bool = False,
) -> None:
    import ray

    owned = not ray.is_initialized()
    if owned:
        _init_ray(config)
    try:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        show = config.progress if config.progress is not None else sys.stderr.isatty()
        ctx.enable_progress_bars = bool(show)
        if not config.verbose:
            # Ray Data's INFO chatter, its "progress bars disabled" notice, and the stack trace of an
            # exception that is reported anyway
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
            logging.getLogger("ray.data.exceptions").setLevel(logging.CRITICAL)
        resources = ray.cluster_resources()
        cpus = float(resources.get("CPU", 1.0))
        gpus = float(resources.get("GPU", 0.0))
        use_gpu = gpus > 0 and (config.device == "auto" or config.device.startswith("cuda"))
        if config.device.startswith("cuda") and gpus == 0:
            raise ParameterError(f"--device {config.device}: the Ray cluster has no GPU")
        workers = config.num_workers or (max(1, int(gpus)) if use_gpu else 1)
        local = config.ray_address is None
        # a fraction of a CPU per actor, so that actors never starve Ray Data's own tasks
        cpus_per_actor = max(0.25, min(1.0, (cpus - 1.0) / workers)) if cpus > 1 else 0.5
        # no actor restarts: a worker that dies stops the job, and a re-run resumes it from the
        # results file (Ray's default, endless restarts and task retries, would loop on an input
        # that kills its worker, and prints a "restart will fail" error line on every run)
        remote: dict = {"num_cpus": cpus_per_actor, **_no_restarts(ray.data.Dataset.map_batches)}
        if use_gpu:
            remote["num_gpus"] = 1.0 if workers <= gpus else gpus / workers
        # torch threads: the local machine's cores split between the workers (Ray would give one each)
        threads = max(1, int((os.cpu_count() or 1) // workers)) if local else None
        env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV_PREFIXES)}
        rows = _rows(todo, config.crops_out, stems or {})
        # small blocks: results come back (and are checkpointed) every few images; at least
        # MIN_BLOCK_ROWS rows each, since every block costs a Ray task (tens of ms), and at most
        # about 2000 blocks in all
        per_block = config.batch_size * max(
            math.ceil(MIN_BLOCK_ROWS / config.batch_size), math.ceil(len(rows) / (config.batch_size * 2000))
        )
        ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / per_block)))
        ds = _map_batches_quietly(
            ds,
            CropWorker,
            fn_constructor_kwargs={
                "model": config.model,
                "backbone": config.backbone,
                "device": "cuda" if use_gpu else ("cpu" if config.device == "auto" else config.device),
                "precision": config.precision,
                "quantize": config.quantize,
                "limits": limits,
                "top_k": config.top_k,
                "aspect_ratio": config.aspect_ratio,
                "num_threads": threads,
                "env": env,
                "driver_pid": os.getpid() if local else None,
                "pictures": {
                    "strip_metadata": config.strip_metadata,
                    "strip_icc": config.strip_icc,
                    "overwrite": replace,
                },
            },
            batch_size=config.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(
                size=workers, max_tasks_in_flight_per_actor=MAX_TASKS_PER_ACTOR
            ),
            **remote,
        )
        logger.info(
            "batch: %d inputs on %d worker(s) (%s CPU%s each)",
            len(rows),
            workers,
            cpus_per_actor,
            f", {remote['num_gpus']} GPU" if use_gpu else "",
        )
        wanted = {it.key for it in todo}
        written: set = set()
        t_first = None
        try:
            for block in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                objects = []
                for key, line, failed in zip(block["key"], block["line"], block["failed"], strict=True):
                    fields = json.loads(str(key))
                    k = item_key(*fields)
                    if k in written or k not in wanted:
                        continue
                    written.add(k)
                    obj = json.loads(str(line))
                    if result_key(obj) != k:  # resume reads the key back from the line: keep it exact
                        obj.update(image=fields[0], query=fields[1], top_k=fields[3], aspect=fields[4])
                        if fields[2] is not None:
                            obj["image_query"] = fields[2]
                    if stems and not failed:
                        n = len(obj["crops"])
                        obj["crop_files"] = [
                            str(crop_path(config.crops_out, stems[k], i)) for i in range(1, n + 1)
                        ]
                    objects.append(obj)
                    if failed:
                        summary.failed += 1
                    else:
                        summary.done += 1
                writer.append(objects)
                now = time.perf_counter()
                if t_first is None:
                    t_first = now
                else:
                    summary.steady_count += len(objects)
                    summary.steady_seconds = now - t_first
        except (ClipCropError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise ClipCropError(_explain_ray_failure(exc)) from exc
    finally:
        if owned:
            ray.shutdown()


def _rows(todo: list[BatchItem], crops_out: str | None, stems: dict) -> list[dict]:
    """Ray rows: names stay as given (they are the results' keys); workers open absolute paths,
    since their working folder is not the driver's on a cluster, and write crops to absolute ones."""
    rows = []
    for it in todo:
        row = {
            "item": json.dumps([it.image, it.query, it.image_query, it.top_k, it.aspect]),
            "paths": json.dumps(
                [os.path.abspath(it.image), os.path.abspath(it.image_query) if it.image_query else None]
            ),
        }
        if crops_out:
            stem = stems.get(it.key)
            row["crops"] = json.dumps(
                os.path.abspath(os.path.join(crops_out, stem)) if stem is not None else None
            )
        rows.append(row)
    return rows


def _no_restarts(map_batches: Any) -> dict:
    """``{"max_restarts": 0}`` when this Ray's ``map_batches`` takes it (as a named parameter or
    through its remote-args keywords), else nothing."""
    params = inspect.signature(map_batches).parameters
    if "max_restarts" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {"max_restarts": 0}
    return {}


def _map_batches_quietly(ds: Any, *args: Any, **kwargs: Any) -> Any:
    """``ds.map_batches`` without the deprecation warning Ray 2.60 gives for remote-args keywords
    (``max_restarts`` has no named parameter yet); other warnings still show."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*ray_remote_args.*deprecated")
        return ds.map_batches(*args, **kwargs)


def _init_ray(config: BatchConfig) -> None:
    import ray

    quiet = not config.verbose
    kwargs: dict = {
        "include_dashboard": False,
        "log_to_driver": bool(config.verbose),
        "logging_level": logging.ERROR if quiet else logging.INFO,
        "configure_logging": True,
    }
    if config.ray_address:
        ray.init(address=config.ray_address, **kwargs)
    else:
        ray.init(address="local", num_cpus=config.num_cpus or os.cpu_count() or 1, **kwargs)


def _explain_ray_failure(exc: BaseException) -> str:
    """The root cause of a Ray failure in one line (a ClipCrop error message when there is one)."""
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ClipCropError):
            return str(cur)
        cause = getattr(cur, "cause", None)
        cur = cause if isinstance(cause, BaseException) else (cur.__cause__ or cur.__context__)
    text = str(exc)
    # a worker's exception arrives as text: "clipcrop.errors.ModelLoadError: <message>"
    found = re.findall(r"^clipcrop\.errors\.\w+: (.+)$", text, flags=re.MULTILINE)
    if found:
        return found[-1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"the batch job failed in Ray: {lines[-1] if lines else type(exc).__name__}"


def _check_local_model(model: str | None) -> None:
    """Fail fast (before Ray starts) on a local model folder that cannot be right."""
    name = model or os.environ.get("CLIPCROP_MODEL")
    if not name:
        return
    p = Path(name).expanduser()
    looks_local = name.startswith(("/", ".", "~")) or p.exists()
    if not looks_local:
        return  # a Hub id: the workers download or find it in the cache
    if not p.exists():
        raise ModelLoadError(f"{name}: no such folder")
    if not p.is_dir():
        raise ModelLoadError(f"{name}: is a file; pass the folder that holds config.json and the weights")
    if not (p / "config.json").is_file():
        raise ModelLoadError(
            f"{name}: folder has no config.json; it is not a saved OWL-ViT or ClipCrop model"
        )
