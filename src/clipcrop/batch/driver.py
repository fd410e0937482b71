"""Batch cropping at scale on Ray Data, resumable after any interruption: :func:`run_batch`.

``run_batch(BatchConfig(...))`` crops every input of a folder or a JSONL manifest
(:mod:`clipcrop.batch.manifest`) and appends one JSON line per input to a results file
(:mod:`clipcrop.batch.results`); ``clipcrop batch`` is its command line. Every job-wide setting is
checked before Ray starts (:class:`~clipcrop.errors.ParameterError`); the inputs that already
have a line are skipped, the rest run on Ray (:mod:`clipcrop.batch.ray_pool`), each input exactly
once. With ``crops_out`` the crop pictures are written too (:mod:`clipcrop.batch.outputs`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ..errors import ClipCropError, ModelLoadError, ParameterError
from ..limits import Limits
from ..validation import validate_query, validate_query_pair
from .config import BatchConfig, BatchSummary, job_options
from .manifest import BatchItem, ItemDefaults, check_options, collect_items
from .outputs import CropsExistError, existing_targets, plan_stems
from .ray_pool import run_on_ray
from .results import BatchPlan, ResultsWriter, lock_results, plan_batch

logger = logging.getLogger(__name__)


def run_batch(config: BatchConfig) -> BatchSummary:
    """Run (or resume) a batch job; returns its summary (the caller prints it).

    Raises:
        ParameterError: bad input path or settings (before Ray starts); messages name the
            :class:`BatchConfig` fields.
        CropsExistError: a new job would replace crop pictures and ``overwrite`` is not set.
        ClipCropError: the job could not run (e.g. the model failed to load in the workers);
            results written so far are kept and a re-run resumes from them.
    """
    t0 = time.perf_counter()
    limits = _check_config(config)
    out = Path(config.out)
    items = _job_items(config, limits)
    fresh = not out.exists() or out.stat().st_size == 0  # a new job, not a resumed one
    stems = _crop_stems(config, items, fresh)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_results(out)  # one job per results file, or lines could be written twice
    try:
        plan = plan_batch(items, out)
        if plan.state.dropped_lines:  # the repair replaced the file: hold the lock on the new one
            lock, old = lock_results(out), lock
            os.close(old)
        _report_repairs(config, out, plan, stems, fresh)
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
                run_on_ray(
                    config, limits, todo, writer, summary, stems, replace=config.overwrite or not fresh
                )
    finally:
        os.close(lock)
    summary.seconds = time.perf_counter() - t0
    return summary


def _check_config(config: BatchConfig) -> Limits:
    """The job's limits, once the settings that need no input are checked (ParameterError)."""
    if config.batch_size < 1:
        raise ParameterError(f"batch_size must be at least 1, got {config.batch_size}")
    if config.num_workers is not None and config.num_workers < 1:
        raise ParameterError(f"num_workers must be at least 1, got {config.num_workers}")
    if Path(config.out).is_dir():
        raise ParameterError(f"out {config.out}: is a folder; give the results file (JSONL)")
    if config.ray_address is None:
        _check_local_model(config.model)
    return Limits.from_env(max_pixels=int(config.max_megapixels * 1e6) if config.max_megapixels else None)


def _report_repairs(config: BatchConfig, out: Path, plan: BatchPlan, stems: dict, fresh: bool) -> None:
    """Log what resuming changed: pictures an interrupted run left, lines repaired in ``out``."""
    if stems and not fresh and not config.overwrite:
        left = existing_targets(plan.pending, stems, config.crops_out or "")
        if left:
            logger.warning(
                "replacing %d picture(s) left in %s by the interrupted run", len(left), config.crops_out
            )
    if plan.state.dropped_lines:
        logger.warning("%s: dropped %d line(s) that were not valid results", out, plan.state.dropped_lines)
    if plan.state.torn_bytes:
        logger.warning(
            "%s: cut away a torn last line (%d bytes) left by an interruption", out, plan.state.torn_bytes
        )


def _job_items(config: BatchConfig, limits: Limits) -> list[BatchItem]:
    """The job's inputs, every job-wide setting checked first (ParameterError before Ray starts)."""
    validate_query_pair(config.query, config.image_query)
    validate_query(config.query, limits)
    if config.image_query is not None and not Path(config.image_query).is_file():
        raise ParameterError(f"image_query {config.image_query}: no such file")
    if (config.strip_metadata or config.strip_icc) and not config.crops_out:
        raise ParameterError("strip_metadata and strip_icc need crops_out, the folder crops are written to")
    if config.crops_out and Path(config.crops_out).exists() and not Path(config.crops_out).is_dir():
        raise ParameterError(f"crops_out {config.crops_out}: is a file; give the folder to write crops to")
    max_k = _known_max_top_k(config, limits)
    options = job_options(config)
    check_options(config.top_k, config.aspect_ratio, max_k, options)
    defaults = ItemDefaults(config.image_query, config.top_k, config.aspect_ratio, max_k, options)
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
    exist unless ``overwrite``, before anything is written (:class:`CropsExistError`)."""
    if not config.crops_out:
        return {}
    stems = plan_stems(items, config.input)
    if fresh and not config.overwrite:
        found = existing_targets(items, stems, config.crops_out)
        if found:
            raise CropsExistError(found)
    return stems


def _check_local_model(model: str | None) -> None:
    """Fail fast (before Ray starts) on a local model folder that cannot be right; a Hub id is
    left to the workers (they download it or find it in the cache)."""
    from ..model_source import folder_problem, looks_local, model_name

    name = model_name(model)
    if not looks_local(name):
        return
    problem = folder_problem(name)
    if problem is not None:
        raise ModelLoadError(problem)
