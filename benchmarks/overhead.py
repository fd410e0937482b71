"""Targets 1 and 2: ClipCrop's overhead over the bare OWL-ViT call, and the cost of extra queries.

    python benchmarks/overhead.py --model DIR [--repeats 7]

1. ``cc.crop(image, query=...)`` vs the bare backbone call it needs (``OwlViTProcessor`` + one
   ``OwlViTForObjectDetection`` forward on the same image and query), in trained mode (a decoder
   checkpoint with random weights) and training-free mode. Text caches are cleared before every
   ClipCrop call, so each call pays for keywords and text embeddings like a new query.
2. After ``enc = cc.encode(image)``: ``enc.crop(query=new)`` and ``enc.crop(query=repeated)`` vs
   ``cc.crop(...)``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from _common import (  # noqa: E402
    alternate,
    machine_info,
    make_photo_set,
    median,
    ms,
    print_table,
    random_decoder_checkpoint,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="OWL-ViT folder (e.g. a full-size random B/32)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--query", default="a woman and three dogs on the boat")
    args = ap.parse_args()
    logging.disable(logging.WARNING)

    import torch
    from transformers import OwlViTForObjectDetection, OwlViTProcessor

    from clipcrop import ClipCrop
    from clipcrop.modeling.keywords import extract_keywords

    tmp = Path(tempfile.mkdtemp(prefix="clipcrop-bench-"))
    photo = make_photo_set(tmp / "photos", 1, long_side=768)[0]
    from PIL import Image

    image = Image.open(photo).convert("RGB")
    processor = OwlViTProcessor.from_pretrained(args.model)
    bare_model = OwlViTForObjectDetection.from_pretrained(args.model).eval()

    @torch.no_grad()
    def bare() -> None:
        inputs = processor(text=[[args.query]], images=image, return_tensors="pt")
        bare_model(**inputs)

    free = ClipCrop.from_pretrained(args.model)
    trained = ClipCrop.from_pretrained(random_decoder_checkpoint(args.model, tmp / "decoder"))
    counter = itertools.count()

    def cold(cc):
        def run() -> None:
            cc.backbone._text_cache.clear()
            extract_keywords.cache_clear()
            cc.crop(image, query=args.query)

        return run

    print(f"machine: {machine_info()}")
    print(f"image: {image.width}x{image.height} real photo; query: {args.query!r}; repeats {args.repeats}")
    t = alternate({"bare": bare, "trained": cold(trained), "free": cold(free)}, repeats=args.repeats)
    b = median(t["bare"])
    rows = [
        ("bare OWL-ViT (processor + forward)", ms(b), "1.00x", ""),
        ("cc.crop trained mode", ms(median(t["trained"])), f"{median(t['trained']) / b:.2f}x", "<= 1.10x"),
        ("cc.crop training-free mode", ms(median(t["free"])), f"{median(t['free']) / b:.2f}x", "<= 1.10x"),
    ]
    print_table("Target 1: overhead over the bare backbone call", rows, ("call", "median", "ratio", "target"))

    rows2 = []
    for name, cc in (("trained", trained), ("training-free", free)):
        enc = cc.encode(image)

        def new_query(enc=enc) -> None:
            enc.crop(query=f"a small red object number {next(counter)}")

        def repeated(enc=enc) -> None:
            enc.crop(query=args.query)

        t2 = alternate({"crop": cold(cc), "new": new_query, "repeat": repeated}, repeats=args.repeats)
        c = median(t2["crop"])
        rows2.append(
            (
                f"{name}: enc.crop(new query)",
                ms(median(t2["new"])),
                f"{median(t2['new']) / c:.3f}x",
                "<= 0.10x",
            )
        )
        rows2.append(
            (
                f"{name}: enc.crop(repeated query)",
                ms(median(t2["repeat"])),
                f"{median(t2['repeat']) / c:.3f}x",
                "<= 0.02x",
            )
        )
    print_table(
        "Target 2: many queries on one encoded image (ratio to cc.crop)",
        rows2,
        ("call", "median", "ratio", "target"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
