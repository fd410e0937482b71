"""The results file of a batch job: one JSON line per input, durable across any interruption.

Each line is the object ``clipcrop crop --json`` prints (``CropResult.to_dict()``), or for an
input that failed ``"error": MESSAGE`` and ``"crops": []``; every line also records ``top_k`` and
``aspect`` (a line without them, from an older version, has 5 and null). Lines are written in
*completion* order, whole, with one ``write`` and ``fsync`` per block (:class:`ResultsWriter`),
so a kill at any moment leaves a file whose complete lines are all valid. At start the file is
repaired (:func:`repair_results`: a torn last line is cut away, or completed when only its newline
is missing) and every input that already has a line, success or error, is skipped
(:func:`plan_batch`); one job at a time holds the file (:func:`lock_results`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ClipCropError
from ..io.atomic_files import FILE_MODE, fsync_dir, write_atomic
from .manifest import BatchItem, result_key


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


def lock_results(path: Path) -> int:
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
