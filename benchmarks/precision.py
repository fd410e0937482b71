"""Target 6: faster than fp32 where the user allows it, without moving the result.

    python benchmarks/precision.py --model DIR [--repeats 7]

CPU: ``--quantize int8`` (dynamic int8 quantisation of the vision tower's MLPs) vs fp32.
GPU (when CUDA is available): ``--precision bf16`` and ``fp16`` vs fp32 on the GPU.
For each: median time of ``cc.crop`` per photo, the speed-up, and against fp32 on the same
device over every photo x query pair: the IoU of the top-1 crop and how often ``detect`` picks the
same best token. Use a calibrated checkpoint (``clipcrop make-random-backbone --size base32``):
on raw random heads every variant agrees trivially, since their outputs are degenerate.
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
    ap.add_argument("--queries", nargs="+", default=["a human face", "a cup of coffee", "a red motorcycle"])
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    import numpy as np
    import torch
    from PIL import Image

    from clipcrop import ClipCrop
    from clipcrop.ops.box_ops import iou_np

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
    pairs = [(i, q) for i in range(len(photos)) for q in args.queries]
    top1, tokens = {}, {}
    for name, cc in models.items():
        encoded = [cc.encode(p) for p in photos]
        top1[name] = [encoded[i].crop(query=q, top_k=1)[0].box for i, q in pairs]
        tokens[name] = [encoded[i].detect(query=q, top_k=1)[0].token for i, q in pairs]

    def timer(cc):
        def run() -> None:
            for p in photos:
                cc.crop(p, query=args.queries[0])
            if torch.cuda.is_available():
                torch.cuda.synchronize()

        return run

    times = alternate({name: timer(cc) for name, cc in models.items()}, repeats=args.repeats)
    print(f"machine: {machine_info()}")
    print(
        f"{len(photos)} real photos (768 px) x {len(args.queries)} queries, {args.repeats} alternating runs"
    )
    rows = []
    for name in models:
        ref = "fp32 cuda" if "cuda" in name else "fp32 cpu"
        per = median(times[name]) / len(photos)
        speed = median(times[ref]) / median(times[name])
        ious = [
            iou_np(np.array([a]), np.array([b]))[0, 0] for a, b in zip(top1[name], top1[ref], strict=True)
        ]
        same = np.mean([a == b for a, b in zip(tokens[name], tokens[ref], strict=True)])
        rows.append(
            (name, ms(per), f"{speed:.2f}x", f"{np.mean(ious):.3f}", f"{np.min(ious):.3f}", f"{same:.2f}")
        )
    print_table(
        "Target 6: precision and quantisation (per photo; vs fp32 on the same device)",
        rows,
        ("variant", "median/photo", "speed-up", "top-1 IoU mean", "min", "same token"),
    )
    if not torch.cuda.is_available():
        print("no CUDA device here: bf16/fp16 rows are measured only where a GPU is present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
