"""Changes to process-wide state that the batch job needs for a while, each put back afterwards:
logger levels and handlers, environment variables, torch's thread count.

A worker runs inside a Ray actor's process, but also in the caller's own process (tests, a
notebook that builds a :class:`~clipcrop.batch.worker.CropWorker`), and the driver in a program
that may go on after the job: neither may leave the caller's settings changed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping


@contextlib.contextmanager
def restored_loggers(names: Iterable[str]) -> Iterator[None]:
    """Inside the block, the loggers ``names`` may be changed (level, handlers, propagation);
    afterwards each is as it was."""
    saved = []
    for name in names:
        log = logging.getLogger(name)
        saved.append((log, log.level, list(log.handlers), log.propagate))
    try:
        yield
    finally:
        for log, level, handlers, propagate in saved:
            log.setLevel(level)
            log.handlers[:] = handlers
            log.propagate = propagate


@contextlib.contextmanager
def quiet_loggers(levels: Mapping[str, int]) -> Iterator[None]:
    """The loggers of ``levels`` at (at least) those levels inside the block, restored after."""
    with restored_loggers(levels):
        for name, level in levels.items():
            log = logging.getLogger(name)
            log.setLevel(max(level, log.getEffectiveLevel()))
        yield


@contextlib.contextmanager
def environ_defaults(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``env``'s variables set where they are not set already, inside the
    block; afterwards the ones it added are removed again (those already set are never touched)."""
    added = [k for k in env if k not in os.environ]
    for k in added:
        os.environ[k] = env[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """``torch.set_num_threads(count)`` inside the block (None: leave it), restored after."""
    if not count:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
