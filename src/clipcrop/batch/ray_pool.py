"""Running the batch job's workers on Ray Data and writing their results as they come back.

Locally by default: an embedded Ray instance (``ray.init(address="local")``, no dashboard), shut
down at the end. With ``ray_address`` (``"auto"`` or ``HOST:PORT``) the job runs on that cluster;
image paths must then be readable on every node (shared storage) and ClipCrop must be installed
there. ``map_batches`` runs a pool of ``num_workers`` actors (:class:`~clipcrop.batch.worker.CropWorker`),
each loading the model once and keeping prepared conditions for the queries it has seen. When
the cluster has GPUs and the device allows it (``auto``/``cuda``) each actor gets a GPU (a share of
one when there are more actors than GPUs). On CPU the actors take a fraction of a CPU each so that
a small machine never deadlocks, and the local machine's cores are split between them for torch.

Results come back one Ray output block at a time (blocks of ``max(batch_size, 4)`` rows, rounded
up to a multiple of ``batch_size``); each block's lines are appended whole before the next block,
so only the blocks in flight at a kill are computed again: at most ``MAX_TASKS_PER_ACTOR`` per
worker plus the finished ones the driver has not written yet. A key seen twice within a run (a
retried Ray task) is written once.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..crop_options import parse_aspects
from ..errors import ClipCropError, ParameterError
from ..io.output_names import crop_paths
from ..limits import Limits
from .config import BatchConfig, BatchSummary
from .manifest import BatchItem, item_key, result_key
from .process_state import quiet_loggers, restored_loggers
from .results import ResultsWriter
from .worker import CropWorker

logger = logging.getLogger(__name__)

#: smallest Ray block (rows): the unit of checkpointing, so at most a few blocks are redone after a kill
MIN_BLOCK_ROWS = 4
#: blocks queued on one worker at a time: two keep it busy while the next block is shipped, and
#: bound what a kill throws away (pinned here, since Ray's default may change)
MAX_TASKS_PER_ACTOR = 2
#: environment variables the actors need to see like the driver does (cluster nodes do not inherit them)
_FORWARDED_ENV_PREFIXES = ("CLIPCROP_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")


@dataclass(frozen=True)
class Placement:
    """How the workers are spread over the Ray cluster.

    Attributes:
        workers: model actors.
        use_gpu: each actor gets ``gpus_per_actor`` of a GPU (and runs on ``cuda``).
        cpus_per_actor: a fraction of a CPU, so that actors never starve Ray Data's own tasks.
        torch_threads: torch threads per actor on a local Ray (the machine's cores split between
            the actors; Ray would give one each); None on a cluster.
    """

    workers: int
    use_gpu: bool
    cpus_per_actor: float
    gpus_per_actor: float = 0.0
    torch_threads: int | None = None


def plan_placement(config: BatchConfig, resources: dict[str, float]) -> Placement:
    """The placement for ``config`` on a cluster with ``resources`` (``ray.cluster_resources()``).

    Raises:
        ParameterError: ``device`` asks for CUDA and the cluster has no GPU.
    """
    cpus = float(resources.get("CPU", 1.0))
    gpus = float(resources.get("GPU", 0.0))
    use_gpu = gpus > 0 and (config.device == "auto" or config.device.startswith("cuda"))
    if config.device.startswith("cuda") and gpus == 0:
        raise ParameterError(f"device {config.device!r}: the Ray cluster has no GPU")
    workers = config.num_workers or (max(1, int(gpus)) if use_gpu else 1)
    return Placement(
        workers=workers,
        use_gpu=use_gpu,
        cpus_per_actor=max(0.25, min(1.0, (cpus - 1.0) / workers)) if cpus > 1 else 0.5,
        gpus_per_actor=(1.0 if workers <= gpus else gpus / workers) if use_gpu else 0.0,
        torch_threads=max(1, int((os.cpu_count() or 1) // workers)) if config.ray_address is None else None,
    )


def rows_per_block(batch_size: int, rows: int) -> int:
    """Rows of one Ray block: results come back (and are checkpointed) every few images; at least
    :data:`MIN_BLOCK_ROWS`, since every block costs a Ray task (tens of ms), at most about 2000
    blocks in all, and always a whole number of batches."""
    return batch_size * max(math.ceil(MIN_BLOCK_ROWS / batch_size), math.ceil(rows / (batch_size * 2000)))


def worker_arguments(config: BatchConfig, limits: Limits, placement: Placement, replace: bool) -> dict:
    """The keyword arguments of every :class:`CropWorker`."""
    local = config.ray_address is None
    device = "cuda" if placement.use_gpu else ("cpu" if config.device == "auto" else config.device)
    return {
        "model": config.model,
        "backbone": config.backbone,
        "device": device,
        "precision": config.precision,
        "quantize": config.quantize,
        "limits": limits,
        "top_k": config.top_k,
        "aspect_ratio": config.aspect_ratio,
        "num_threads": placement.torch_threads,
        "env": {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV_PREFIXES)},
        "driver_pid": os.getpid() if local else None,
        "pictures": {
            "strip_metadata": config.strip_metadata,
            "strip_icc": config.strip_icc,
            "overwrite": replace,
        },
    }


def run_on_ray(
    config: BatchConfig,
    limits: Limits,
    todo: list[BatchItem],
    writer: ResultsWriter,
    summary: BatchSummary,
    stems: dict | None = None,
    *,
    replace: bool = False,
) -> None:
    """Crop ``todo`` on Ray and append each block's lines to ``writer`` as it comes back,
    counting them in ``summary``; a Ray started here is shut down at the end.

    Raises:
        ClipCropError: the job failed in Ray (the root cause's message, see :func:`explain_ray_failure`).
    """
    with ray_session(config), ray_data_settings(config):
        import ray
        import ray.data

        placement = plan_placement(config, ray.cluster_resources())
        rows = _rows(todo, config.crops_out, stems or {})
        per_block = rows_per_block(config.batch_size, len(rows))
        ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / per_block)))
        # no actor restarts: a worker that dies stops the job, and a re-run resumes it from the
        # results file (Ray's default, endless restarts and task retries, would loop on an input
        # that kills its worker, and prints a "restart will fail" error line on every run)
        remote: dict = {"num_cpus": placement.cpus_per_actor, **_no_restarts(ray.data.Dataset.map_batches)}
        if placement.use_gpu:
            remote["num_gpus"] = placement.gpus_per_actor
        ds = _map_batches_quietly(
            ds,
            CropWorker,
            fn_constructor_kwargs=worker_arguments(config, limits, placement, replace),
            batch_size=config.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(
                size=placement.workers, max_tasks_in_flight_per_actor=MAX_TASKS_PER_ACTOR
            ),
            **remote,
        )
        logger.info(
            "batch: %d inputs on %d worker(s) (%s CPU%s each)",
            len(rows),
            placement.workers,
            placement.cpus_per_actor,
            f", {placement.gpus_per_actor} GPU" if placement.use_gpu else "",
        )
        collector = ResultCollector(todo, writer, summary, config.crops_out, stems or {})
        try:
            for block in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                collector.write_block(block)
        except (ClipCropError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise ClipCropError(explain_ray_failure(exc)) from exc


class ResultCollector:
    """Turns the workers' output blocks into result lines: each input once (a retried Ray task may
    send one twice), with the key resume reads back, and ``crop_files`` when pictures are written."""

    def __init__(
        self,
        todo: list[BatchItem],
        writer: ResultsWriter,
        summary: BatchSummary,
        crops_out: str | None,
        stems: dict,
    ) -> None:
        self.wanted = {it.key for it in todo}
        self.written: set = set()
        self.writer, self.summary = writer, summary
        self.crops_out, self.stems = crops_out, stems
        self._t_first: float | None = None

    def write_block(self, block: dict) -> None:
        """Append one block's new lines (one write and fsync) and count them."""
        objects = []
        for key, line, failed in zip(block["key"], block["line"], block["failed"], strict=True):
            obj = self._line(json.loads(str(key)), str(line), bool(failed))
            if obj is None:
                continue
            objects.append(obj)
            if failed:
                self.summary.failed += 1
            else:
                self.summary.done += 1
        self.writer.append(objects)
        now = time.perf_counter()
        if self._t_first is None:
            self._t_first = now
        else:
            self.summary.steady_count += len(objects)
            self.summary.steady_seconds = now - self._t_first

    def _line(self, fields: list, line: str, failed: bool) -> dict | None:
        """The result object of one output row, or None when it is not to be written."""
        k = item_key(*fields)
        if k in self.written or k not in self.wanted:
            return None
        self.written.add(k)
        obj = json.loads(line)
        if result_key(obj) != k:  # resume reads the key back from the line: keep it exact
            obj.update(image=fields[0], query=fields[1], top_k=fields[3], aspect=fields[4])
            if fields[2] is not None:
                obj["image_query"] = fields[2]
            if len(fields) > 5 and fields[5]:
                obj["options"] = fields[5]
        if self.stems and not failed:
            several = len(parse_aspects(fields[4])) > 1
            aspects = [c.get("aspect") for c in obj["crops"]]
            obj["crop_files"] = [str(p) for p in crop_paths(self.crops_out, self.stems[k], aspects, several)]
        return obj


def _rows(todo: list[BatchItem], crops_out: str | None, stems: dict) -> list[dict]:
    """Ray rows: names stay as given (they are the results' keys); workers open absolute paths,
    since their working folder is not the driver's on a cluster, and write crops to absolute ones."""
    rows = []
    for it in todo:
        row = {
            "item": json.dumps([it.image, it.query, it.image_query, it.top_k, it.aspect, it.options]),
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


@contextlib.contextmanager
def ray_session(config: BatchConfig) -> Iterator[None]:
    """Ray for the job: the one this process already runs (left as it is), else one started here
    (local, or ``config.ray_address``) and shut down afterwards, with the ``ray`` logger that
    ``ray.init`` configures put back as it was."""
    import ray

    if ray.is_initialized():
        yield
        return
    with restored_loggers(["ray"]):
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
        try:
            yield
        finally:
            ray.shutdown()


#: Ray Data's loggers a quiet job turns down (its INFO chatter, its "progress bars disabled"
#: notice, and the stack trace of an exception that is reported anyway)
QUIET_RAY_DATA_LEVELS = {
    "ray.data": logging.WARNING,
    "ray.data._internal.progress": logging.ERROR,
    "ray.data.exceptions": logging.CRITICAL,
}


@contextlib.contextmanager
def ray_data_settings(config: BatchConfig) -> Iterator[None]:
    """Ray Data's progress bars (``config.progress``, default: when stderr is a terminal) and,
    unless ``config.verbose``, quieter loggers for the block; both restored afterwards."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    bars = ctx.enable_progress_bars
    show = config.progress if config.progress is not None else sys.stderr.isatty()
    with quiet_loggers(QUIET_RAY_DATA_LEVELS if not config.verbose else {}):
        ctx.enable_progress_bars = bool(show)
        try:
            yield
        finally:
            ctx.enable_progress_bars = bars


def explain_ray_failure(exc: BaseException) -> str:
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
