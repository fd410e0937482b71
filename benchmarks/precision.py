"""Target 6: faster than fp32 where the user allows it.

    python benchmarks/precision.py --model DIR [--repeats 7]

CPU: ``--quantize int8`` (dynamic int8 quantisation of the backbone's linear layers) vs fp32.
GPU (when CUDA is available): ``--precision bf16`` and ``fp16`` vs fp32 on the GPU.
For each: median time of ``cc.crop`` per photo, the speed-up, and the IoU of its top-1 crop with
the fp32 top-1 crop on the benchmark photos (1.0 = same crop).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
from _common import alternate, machine_info, make_photo_set, median, ms, print_table  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--query", default="a person")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    import numpy as np
    import torch
    from PIL import Image

    from clipcrop import ClipCrop
    from clipcrop.box_ops import iou_np

    tmp = Path(tempfile.mkdtemp(prefix="clipcrop-prec-"))
    photos = [Image.open(p).convert("RGB") for p in make_photo_set(tmp, args.images, long_side=768)]
    variants = {"fp32 cpu": dict(device="cpu")}
    variants["int8 cpu"] = dict(device="cpu", quantize="int8")
    if torch.cuda.is_available():
        variants.update(
            {
                "fp32 cuda": dict(device="cuda"),
                "bf16 cuda": dict(device="cuda", precision="bf16"),
                "fp16 cuda": dict(device="cuda", precision="fp16"),
            }
        )
    models = {name: ClipCrop.from_pretrained(args.model, **kw) for name, kw in variants.items()}
    top1 = {
        name: [cc.crop(p, query=args.query, top_k=1)[0].box for p in photos] for name, cc in models.items()
    }

    def timer(cc):
        def run() -> None:
            for p in photos:
                cc.crop(p, query=args.query)
            if torch.cuda.is_available():
                torch.cuda.synchronize()

        return run

    times = alternate({name: timer(cc) for name, cc in models.items()}, repeats=args.repeats)
    print(f"machine: {machine_info()}")
    print(f"{len(photos)} real photos (768 px), query {args.query!r}, {args.repeats} alternating runs")
    rows = []
    for name in models:
        ref = "fp32 cuda" if "cuda" in name else "fp32 cpu"
        per = median(times[name]) / len(photos)
        speed = median(times[ref]) / median(times[name])
        ious = [
            iou_np(np.array([a]), np.array([b]))[0, 0] for a, b in zip(top1[name], top1[ref], strict=True)
        ]
        rows.append((name, ms(per), f"{speed:.2f}x", f"{np.mean(ious):.3f}", f"{np.min(ious):.3f}"))
    print_table(
        "Target 6: precision and quantisation (per photo; vs fp32 on the same device)",
        rows,
        ("variant", "median/photo", "speed-up", "top-1 IoU mean", "min"),
    )
    if not torch.cuda.is_available():
        print("no CUDA device here: bf16/fp16 rows are measured only where a GPU is present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
