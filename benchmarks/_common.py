"""Shared helpers for the benchmarks: real photos, alternating timers, machine facts, tables.

Benchmarks print ratios measured in one run (pairs timed alternately, median of >= 7), never
assert on time: these machines are noisy, ratios of interleaved runs much less so.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

PHOTO_NAMES = [
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "immunohistochemistry.png",
    "grace_hopper.jpg",
]


def photo_paths() -> list[Path]:
    """Real photos shipped inside scikit-image and matplotlib."""
    import matplotlib
    import skimage

    sk = Path(skimage.__file__).parent / "data"
    out = [sk / n for n in PHOTO_NAMES if (sk / n).is_file()]
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.is_file():
        out.append(hopper)
    return out


def make_photo_set(folder: Path, n: int, long_side: int = 768) -> list[Path]:
    """``n`` distinct JPEGs (crops and flips of the real photos) with the given long side."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = [Image.open(p).convert("RGB") for p in photo_paths()]
    paths = []
    for i in range(n):
        img = sources[i % len(sources)]
        k = i // len(sources)
        w, h = img.size
        m = int(min(w, h) * 0.06 * k)
        img = img.crop((m, m // 2, w - m // 2, h - m))
        if k % 2:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        scale = long_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
        path = folder / f"photo_{i:03d}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


def machine_info() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return (
        f"{cpu}; {os.cpu_count()} logical CPUs; torch {torch.__version__} with {torch.get_num_threads()} threads; "
        f"python {platform.python_version()}"
    )


def alternate(
    funcs: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 1
) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, interleaved (a, b, a, b, ...), after ``warmup`` rounds."""
    for _ in range(warmup):
        for f in funcs.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in funcs}
    for _ in range(repeats):
        for k, f in funcs.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def print_table(title: str, rows: list[tuple], headers: tuple[str, ...]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def random_decoder_checkpoint(backbone_dir: str, out_dir: Path) -> Path:
    """A trained-mode checkpoint with random decoder weights (speed does not depend on them)."""
    import json

    import torch

    from clipcrop.modeling.model import ClipCropModel

    hidden = json.loads((Path(backbone_dir) / "config.json").read_text())["vision_config"]["hidden_size"]
    torch.manual_seed(0)
    model = ClipCropModel(backbone=str(Path(backbone_dir).resolve()), decoder={"input_dim": hidden})
    model.save_pretrained(out_dir)
    return out_dir
