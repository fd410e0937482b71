"""ClipCrop vs smartcrop (PyPI), the non-semantic baseline users know, on the same photos.

    python benchmarks/smartcrop_compare.py --model DIR [--images 8]

Time per image for: smartcrop's best 1:1 crop, and ClipCrop (training-free and trained mode)
with a text query and a 1:1 aspect. smartcrop needs no model, but it cannot take a text or image
query: it finds edges, skin tones and saturation, so two different requests on one photo always
give the same crop.
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
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    import smartcrop
    from PIL import Image

    from clipcrop import ClipCrop

    tmp = Path(tempfile.mkdtemp(prefix="clipcrop-sc-"))
    photos = [Image.open(p).convert("RGB") for p in make_photo_set(tmp / "p", args.images, long_side=768)]
    sc = smartcrop.SmartCrop()
    free = ClipCrop.from_pretrained(args.model)
    trained = ClipCrop.from_pretrained(random_decoder_checkpoint(args.model, tmp / "dec"))

    def run_sc() -> None:
        for p in photos:
            side = min(p.size)
            sc.crop(p, side, side)

    def run_cc(cc):
        def run() -> None:
            for p in photos:
                cc.crop(p, query="a person", aspect_ratio="1:1")

        return run

    t = alternate(
        {"smartcrop": run_sc, "free": run_cc(free), "trained": run_cc(trained)}, repeats=args.repeats
    )
    n = len(photos)
    print(f"machine: {machine_info()}")
    print_table(
        f"smartcrop vs ClipCrop, {n} real photos (768 px), 1:1 crops",
        [
            ("smartcrop 0.5 (SmartCrop().crop)", ms(median(t["smartcrop"]) / n), "no", "no", "no"),
            ("ClipCrop training-free", ms(median(t["free"]) / n), "yes", "yes", "yes"),
            ("ClipCrop trained", ms(median(t["trained"]) / n), "yes", "yes", "yes"),
        ],
        ("method", "time/image", "text query", "image query", "ranked alternatives"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
