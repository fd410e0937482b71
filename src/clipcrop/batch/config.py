"""A batch job's settings (:class:`BatchConfig`) and what a run did (:class:`BatchSummary`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .manifest import DEFAULT_TOP_K


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
            (manifest keys ``top_k`` and ``aspect``); several ratios as ``"1:1,4:5"``.
        size, upscale, keep, avoid_box, avoid, faces: the other crop options, as
            :meth:`clipcrop.crop_options.CropOptions.build` takes them (boxes ``"x0,y0,x1,y1[,w]"``
            in pixels), for every input that does not set its own (manifest keys of the same names).
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
    size: str | None = None
    upscale: bool = False
    keep: list[str] = field(default_factory=list)
    avoid_box: list[str] = field(default_factory=list)
    avoid: list[str] = field(default_factory=list)
    faces: bool = False
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


def job_options(config: BatchConfig) -> dict:
    """The job's crop options beyond top_k and aspect, canonical (see :mod:`.item_options`).

    Raises:
        ParameterError: a value of the wrong type.
    """
    from .item_options import canonical_options

    return canonical_options(
        {
            "size": config.size,
            "upscale": config.upscale,
            "keep": list(config.keep),
            "avoid_box": list(config.avoid_box),
            "avoid": list(config.avoid),
            "faces": config.faces,
        }
    )


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
