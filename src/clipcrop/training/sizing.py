"""Planning a run: the device a run trains on, and a dry run that measures a step (``--dry-run``).

:func:`start_accelerator` turns the ``device`` setting into HF Accelerate's: ``auto`` (a CUDA GPU
when there is one, else the CPU; under ``accelerate launch`` or ``torchrun`` each process takes
its own GPU, or runs on the CPU with gloo), ``cpu``, ``cuda`` or ``cuda:N`` (one process on GPU N).
``mixed_precision`` ``bf16`` or ``fp16`` runs the forward passes under Accelerate's autocast
(fp16 with a gradient scaler, CUDA only; bf16 also on CPUs that support it).

A dry run (:meth:`clipcrop.training.trainer.Trainer.dry_run`) sets the run up exactly as a real
one, trains a few steps on throw-away weights and writes nothing; :class:`StepMeter` times the
steps (the first apart: it pays for warm-up and caches) and reads the peak memory: CUDA's peak
allocation on a GPU, the process's peak resident memory on the CPU. :class:`DryRunReport`
extrapolates to the whole run.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import ParameterError

#: steps a dry run trains (the first is reported apart)
DRY_RUN_STEPS = 3


def check_device(device: str) -> None:
    """Raise :class:`ParameterError` unless ``device`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    index = device[5:] if device.startswith("cuda:") else ""
    if device not in ("auto", "cpu", "cuda") and not index.isdigit():
        raise ParameterError(f"device {device!r} is not auto, cpu, cuda or cuda:N")


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set, restored afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start_accelerator(device: str, mixed_precision: str) -> Any:
    """An :class:`accelerate.Accelerator` on ``device`` (see the module docstring).

    Raises:
        ParameterError: a CUDA device without a GPU, ``cuda:N`` beyond the GPUs or with several
            processes, fp16 without a GPU.
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    check_device(device)
    has_gpu = torch.cuda.is_available()
    if device.startswith("cuda") and not has_gpu:
        raise ParameterError(f"device {device!r}: no CUDA GPU is available here (use auto or cpu)")
    env: dict[str, str] = {}
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not distributed:
        # Accelerate keeps one state per process and refuses a second run with other settings
        # (device, precision); a single process can start afresh, several share a process group
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    if device.startswith("cuda:"):
        if distributed:
            raise ParameterError(
                f"device {device!r} picks one GPU for one process; with several processes each "
                "takes its own (use auto)"
            )
        if int(device[5:]) >= torch.cuda.device_count():
            raise ParameterError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s)")
        env["ACCELERATE_TORCH_DEVICE"] = device
    if mixed_precision == "fp16" and (device == "cpu" or not has_gpu):
        raise ParameterError("mixed_precision fp16 needs a CUDA GPU (on the CPU use bf16 or no)")
    with _environment(env):
        return Accelerator(
            cpu=device == "cpu",
            mixed_precision=mixed_precision,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
        )


def _peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # not on Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


@dataclass
class DryRunReport:
    """What a dry run measured, and what it means for the whole run.

    Attributes:
        device, precision, processes: where it ran (``precision``: ``no``, ``bf16`` or ``fp16``).
        samples, steps_per_epoch, total_steps: the run's size (this process's view).
        steps: steps measured; ``first_step_s`` the first, ``step_s`` the mean of the others (the
            optimizer step included; ``wall_step_s`` also includes waiting for the data).
        peak_memory_mb, memory_kind: peak CUDA allocation, or the process's peak resident memory.
        validation_s, validation_samples: one validation (None: no validation data).
    """

    device: str
    precision: str
    processes: int
    samples: int
    steps_per_epoch: int
    total_steps: int
    steps: int
    first_step_s: float
    step_s: float
    wall_step_s: float
    peak_memory_mb: float
    memory_kind: str
    validation_s: float | None
    validation_samples: int

    @property
    def estimated_s(self) -> float:
        """Steps at the measured wall time, plus a validation per epoch (and one at the end)."""
        epochs = -(-self.total_steps // self.steps_per_epoch)
        return self.total_steps * self.wall_step_s + (self.validation_s or 0.0) * epochs

    def lines(self) -> list[str]:
        """The report as the CLI prints it."""
        precision = {"no": "fp32"}.get(self.precision, self.precision)
        out = [
            f"device: {self.device} ({precision}), {self.processes} process(es)",
            f"samples: {self.samples}; steps per epoch: {self.steps_per_epoch}; total steps: {self.total_steps}",
            f"time per step: {self.step_s:.3f} s ({self.wall_step_s:.3f} s with data loading; "
            f"first step {self.first_step_s:.3f} s; measured over {self.steps} steps)",
            f"peak memory: {self.peak_memory_mb:.0f} MB ({self.memory_kind})",
        ]
        if self.validation_s is not None:
            out.append(f"validation: {self.validation_samples} samples in {self.validation_s:.1f} s")
        out.append(f"estimated run: {duration_text(self.estimated_s)} (steps and validations)")
        return out


def duration_text(seconds: float) -> str:
    """``44 s``, ``12 min``, ``3 h 08 min``: a duration as a person plans with it."""
    if seconds < 59.5:
        return f"{max(0, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


class StepMeter:
    """Times the steps of a dry run and reads the peak memory on ``device``."""

    def __init__(self, device: Any) -> None:
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def measure(self, steps: Iterable[dict]) -> list[tuple[dict, float]]:
        """Run ``steps`` (step records, see :func:`clipcrop.training.runloop.step_record`) and
        return each with its wall time (data loading included)."""
        out = []
        t0 = time.perf_counter()
        for record in steps:
            now = time.perf_counter()
            out.append((record, now - t0))
            t0 = now
        return out

    def report(self, measured: list[tuple[dict, float]], **run: Any) -> DryRunReport:
        """The :class:`DryRunReport` of ``measured`` steps; ``run``: its other fields."""
        import torch

        if not measured:
            raise ParameterError("a dry run needs at least one step")
        rest = measured[1:] or measured
        if self.cuda:
            memory, kind = torch.cuda.max_memory_allocated(self.device) / 2**20, "CUDA peak allocated"
        else:
            memory, kind = _peak_rss_mb(), "process peak resident memory"
        return DryRunReport(
            device=str(self.device),
            steps=len(measured),
            first_step_s=measured[0][0]["step_time"],
            step_s=sum(r["step_time"] for r, _ in rest) / len(rest),
            wall_step_s=sum(w for _, w in rest) / len(rest),
            peak_memory_mb=memory,
            memory_kind=kind,
            **run,
        )


__all__ = ["DRY_RUN_STEPS", "DryRunReport", "StepMeter", "check_device", "duration_text", "start_accelerator"]
