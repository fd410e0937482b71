"""The batch job's worker: a Ray Data callable class that loads the model once and crops a batch
of inputs into result lines.

``CLIPCROP_BATCH_TRACE=FILE`` makes every worker append ``[image, query, image_query, pid, time]``
(one JSON line) for each input it processes to FILE: a debugging aid to measure how much work a
resume repeats.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import ClipCropError
from ..io.images import LoadedImage, load_image
from ..io.result_lines import failed_crop_line
from ..limits import Limits
from ..settings import ModelSettings
from .process_state import environ_defaults, quiet_loggers, torch_threads

if TYPE_CHECKING:  # the predictor imports torch: loaded inside the worker only
    from ..crop_options import CropOptions
    from ..predictor import ClipCrop, Condition, CropResult

logger = logging.getLogger(__name__)

TRACE_ENV = "CLIPCROP_BATCH_TRACE"
#: libraries whose INFO and WARNING chatter a worker keeps out of the job's output
LIBRARY_LOG_LEVELS = {"transformers": logging.ERROR, "huggingface_hub": logging.ERROR}
#: prepared conditions a worker keeps (least recently used dropped first)
MAX_CONDITIONS = 512


def load_predictor(
    model: str | None,
    device: str,
    precision: str,
    quantize: str | None,
    limits: Limits,
    backbone: str | None = None,
) -> ClipCrop:
    """The worker's predictor (:meth:`clipcrop.settings.ModelSettings.load`); ``device``
    ``auto``/``cuda`` is the first GPU Ray gave this actor (Ray sets ``CUDA_VISIBLE_DEVICES``),
    ``auto`` without one CPU."""
    import torch

    if device in ("auto", "cuda") or device.startswith("cuda:"):
        device = "cuda" if torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    settings = ModelSettings(
        model=model, backbone=backbone, device=device, precision=precision, quantize=quantize, limits=limits
    )
    return settings.load()


@dataclass(frozen=True)
class WorkItem:
    """One input as a worker gets it: the names it is known by (kept in its result line) and its
    crop options."""

    image: str
    query: str | None
    image_query: str | None
    top_k: int
    aspect: Any
    options: dict | None = None

    @property
    def recorded(self) -> dict:
        """What its result line records of its options (``top_k``, ``aspect``, ``options`` if any)."""
        out: dict[str, Any] = {"top_k": self.top_k, "aspect": self.aspect}
        if self.options:
            out["options"] = self.options
        return out

    def crop_options(self) -> CropOptions:
        """Its :class:`~clipcrop.crop_options.CropOptions` (ParameterError for a bad value)."""
        from .item_options import build_options

        return build_options(self.top_k, self.aspect, self.options)

    def error_line(self, exc: Exception) -> dict:
        """This input's result object, failed with ``exc``."""
        return failed_crop_line(
            self.image,
            self.query,
            error_message(self.image, exc),
            image_query=self.image_query,
            **self.recorded,
        )


@dataclass(frozen=True)
class _Loaded:
    """An input whose image and condition are ready for the backbone."""

    index: int
    image: LoadedImage
    condition: Condition


class DriverGoneError(ClipCropError):
    """The local driver that started this worker is gone (killed): nobody will write its results."""


class CropWorker:
    """Ray Data callable class: loads the model once, crops a batch of items into result lines.

    Rows carry ``item`` (JSON ``[image, query, image_query, top_k, aspect, options]``; the last
    ones may be left out, then the worker's ``top_k``/``aspect_ratio`` and no options apply;
    ``options`` canonical, see :mod:`clipcrop.batch.item_options`), optionally ``paths`` (files to
    open) and ``crops`` (JSON: the absolute ``DIR/<path>`` to write ``_crop<k>.jpg`` pictures to,
    or null); the output rows carry ``key`` (the same JSON), ``line`` (the result object as JSON)
    and ``failed``. Nothing raised for one input escapes: it becomes that input's error line.
    ``pictures``: ``strip_metadata``, ``strip_icc``, ``overwrite`` for the crops written.

    Process-wide settings (``env`` variables not set already, ``num_threads`` torch threads, quiet
    ``transformers``/``huggingface_hub`` loggers) hold while the worker loads and while it works on
    a batch, and are put back in between: a worker built in the caller's own process leaves it as
    it was.
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
        self._env = dict(env or {})
        self._num_threads = num_threads
        with self._settings():
            self.cc = load_predictor(model, device, precision, quantize, limits, backbone)
            self._trace = os.environ.get(TRACE_ENV)
        self.top_k = top_k
        self.aspect_ratio = aspect_ratio
        self.pictures = dict(pictures or {})
        self._conditions: OrderedDict[tuple[str | None, str | None], Condition] = OrderedDict()
        self._driver_pid = driver_pid

    @contextlib.contextmanager
    def _settings(self) -> Iterator[None]:
        with environ_defaults(self._env), torch_threads(self._num_threads), quiet_loggers(LIBRARY_LOG_LEVELS):
            yield

    def _condition(self, item: WorkItem, image_query_path: str | None = None) -> Condition:
        key = (item.query, item.image_query)
        cond = self._conditions.get(key)
        if cond is None:
            source = None
            if item.image_query is not None:
                source = load_image(
                    image_query_path or item.image_query, self.cc.limits, name=item.image_query
                )
            cond = self.cc.prepare_condition(item.query, source)
            self._conditions[key] = cond
            while len(self._conditions) > MAX_CONDITIONS:
                self._conditions.popitem(last=False)
        else:
            self._conditions.move_to_end(key)
        return cond

    def crop_items(
        self,
        items: Sequence[Sequence[Any]],
        paths: Sequence[Sequence[str | None]] | None = None,
        crops: Sequence[str | None] | None = None,
    ) -> list[dict]:
        """Result objects for ``(image, query, image_query[, top_k, aspect[, options]])`` items, in order.

        ``paths`` optionally gives the files to open, ``(image, image_query)`` per item (absolute
        paths, for workers whose working folder is not the driver's); results keep the names.
        ``crops`` optionally gives per item where to write its crop pictures (see the class).
        """
        defaults = (self.top_k, self.aspect_ratio, None)
        work = [WorkItem(*it, *defaults[len(it) - 3 :]) for it in items]
        files = [tuple(p) for p in paths] if paths is not None else [(w.image, w.image_query) for w in work]
        results: list[dict | None] = [None] * len(work)
        ready: list[_Loaded] = []
        for i, item in enumerate(work):
            try:
                cond = self._condition(item, files[i][1])
                ready.append(_Loaded(i, load_image(files[i][0], self.cc.limits, name=item.image), cond))
            except Exception as exc:  # noqa: BLE001 - one input never kills the job
                results[i] = item.error_line(exc)
        encoded = None
        if len(ready) > 1:
            try:
                encoded = self.cc.encode_batch([r.image for r in ready])
            except Exception:  # noqa: BLE001 - retry one by one to isolate the failing input
                encoded = None
        for n, r in enumerate(ready):
            item = work[r.index]
            try:
                enc = encoded[n] if encoded is not None else self.cc.encode_batch([r.image])[0]
                res = self.cc.crop_encoded(enc, r.condition, options=item.crop_options())
                if crops is not None and crops[r.index]:
                    self._write(r.image, res, str(files[r.index][0]), str(crops[r.index]))
                results[r.index] = {**res.to_dict(), **item.recorded}
            except Exception as exc:  # noqa: BLE001
                results[r.index] = item.error_line(exc)
        self._append_trace(work)
        return [r for r in results if r is not None]

    def _write(self, loaded: LoadedImage, result: CropResult, image_path: str, base: str) -> None:
        """Write the crops of one input at full resolution (decoded again when it was reduced)."""
        from .outputs import write_crops

        full = loaded
        if loaded.image.size != (loaded.width, loaded.height):
            full = load_image(image_path, self.cc.limits, reduce=False, name=loaded.name)
        write_crops(full, result, base, self.pictures)

    def _append_trace(self, work: Sequence[WorkItem]) -> None:
        if not self._trace:
            return
        try:
            with open(self._trace, "a", encoding="utf-8") as fh:
                stamp = [os.getpid(), round(time.time(), 3)]
                fh.write("".join(json.dumps([w.image, w.query, w.image_query, *stamp]) + "\n" for w in work))
        except OSError as exc:  # a debugging aid never fails the job
            logger.warning("%s: cannot append the trace (%s)", self._trace, exc)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        if self._driver_pid is not None and not pid_alive(self._driver_pid):
            # local Ray whose driver was killed (kill -9): stop now instead of finishing the queued
            # batches whose results nobody will write
            stop_orphaned_worker(self._driver_pid)
        keys = [str(s) for s in batch["item"]]
        items = [tuple(json.loads(k)) for k in keys]
        paths = [tuple(json.loads(str(p))) for p in batch["paths"]] if "paths" in batch else None
        crops = [json.loads(str(c)) for c in batch["crops"]] if "crops" in batch else None
        with self._settings():
            results = self.crop_items(items, paths, crops)
        return {
            "key": np.array(keys, dtype=object),
            "line": np.array([json.dumps(r, ensure_ascii=False) for r in results], dtype=object),
            "failed": np.array([r["error"] is not None for r in results], dtype=bool),
        }


def stop_orphaned_worker(driver_pid: int) -> NoReturn:
    """End this Ray actor (``ray.actor.exit_actor``: its queued tasks fail, the process exits);
    outside an actor, raise :class:`DriverGoneError`."""
    message = f"the batch driver (pid {driver_pid}) is gone; stopping this worker"
    logger.warning(message)
    try:
        import ray

        in_actor = ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
    except ImportError:  # pragma: no cover - Ray is a dependency of the batch job
        in_actor = False
    if in_actor:
        from ray.actor import exit_actor

        exit_actor()
    raise DriverGoneError(message)


def pid_alive(pid: int) -> bool:
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


def error_message(image: str, exc: Exception) -> str:
    """The error text of an input: a ClipCrop error's own message (it names the file), anything
    else prefixed with the input's name and the exception's type."""
    if isinstance(exc, ClipCropError):
        return str(exc)
    return f"{image}: {type(exc).__name__}: {exc}"
