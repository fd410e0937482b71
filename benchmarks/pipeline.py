"""What media-pipeline options cost (#16): ``faces=True`` and N aspect ratios against one ratio.

    python benchmarks/pipeline.py --model DIR [--repeats 7] [--query TEXT]

On one real photo with a face (matplotlib's grace_hopper.jpg, 512x600), in trained mode (a
decoder checkpoint with random weights; speed does not depend on them) and training-free mode,
alternating the calls in one process (median of ``--repeats``, after a warm-up round; the query's
embeddings are cached after it, as in a pipeline that crops many images for one query):

* ``cc.crop(photo, query, aspect_ratio="1:1")``: the reference;
* the same with ``faces=True`` (OpenCV's Haar cascade, plus the re-ranking by the face prior);
* ``aspect_ratio`` with 3 and 5 ratios in one call (one backbone pass; ``top_k`` crops each);
* 3 separate one-ratio calls, what the one call with 3 ratios replaces;
* the same options on an image encoded once (``enc.crop``): what each adds after the backbone,
  timed in short calls, so that a busy machine's noise weighs less on the difference.

Prints ratios to the one-ratio call; never asserts on time.
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
    median,
    ms,
    print_table,
    random_decoder_checkpoint,
)

THREE = ["1:1", "4:5", "16:9"]
FIVE = ["1:1", "4:5", "16:9", "9:16", "3:2"]


def calls(cc, image, query: str, top_k: int) -> dict:
    """The whole calls timed against each other, by row name."""

    def crop(**kw):
        return lambda: cc.crop(image, query, top_k=top_k, **kw)

    def separate() -> None:
        for ratio in THREE:
            cc.crop(image, query, top_k=top_k, aspect_ratio=ratio)

    return {
        "1 ratio": crop(aspect_ratio="1:1"),
        "1 ratio + faces": crop(aspect_ratio="1:1", faces=True),
        "3 ratios, one call": crop(aspect_ratio=THREE),
        "5 ratios, one call": crop(aspect_ratio=FIVE),
        "3 ratios, 3 calls": separate,
    }


def encoded_calls(cc, image, query: str, top_k: int) -> dict:
    """The same options after one ``cc.encode``: the work each adds after the backbone."""
    enc = cc.encode(image)

    def crop(**kw):
        return lambda: enc.crop(query, top_k=top_k, **kw)

    return {
        "enc.crop 1 ratio": crop(aspect_ratio="1:1"),
        "enc.crop 1 ratio + faces": crop(aspect_ratio="1:1", faces=True),
        "enc.crop 3 ratios": crop(aspect_ratio=THREE),
        "enc.crop 5 ratios": crop(aspect_ratio=FIVE),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="OWL-ViT folder (e.g. a calibrated full-size B/32)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--query", default="a woman in uniform")
    args = ap.parse_args()
    logging.disable(logging.WARNING)

    import matplotlib
    from PIL import Image

    from clipcrop import ClipCrop
    from clipcrop.modeling.faces import detect_faces

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = Image.open(photo).convert("RGB")
    tmp = Path(tempfile.mkdtemp(prefix="clipcrop-bench-"))
    modes = {
        "trained": ClipCrop.from_pretrained(random_decoder_checkpoint(args.model, tmp / "decoder")),
        "training-free": ClipCrop.from_pretrained(args.model),
    }
    print(f"machine: {machine_info()}")
    print(
        f"image: {photo.name} {image.width}x{image.height}; query {args.query!r}; top_k {args.top_k}; "
        f"repeats {args.repeats}; faces found: {len(detect_faces(image))}"
    )
    face_times = alternate({"faces": lambda: detect_faces(image)}, repeats=args.repeats)["faces"]
    for name, cc in modes.items():
        t = alternate(calls(cc, image, args.query, args.top_k), repeats=args.repeats)
        base = median(t["1 ratio"])
        rows = [(row, ms(median(v)), f"{median(v) / base:.2f}x", "") for row, v in t.items()]
        e = alternate(encoded_calls(cc, image, args.query, args.top_k), repeats=args.repeats)
        one = median(e["enc.crop 1 ratio"])
        for row, v in e.items():
            added = median(v) - one
            rows.append((row, ms(median(v)), f"{median(v) / one:.2f}x", f"{added / base:+.1%} of a crop"))
        print_table(
            f"{name} mode (ratio to one ratio; last column: what the option adds, as a share of a whole one-ratio crop)",
            rows,
            ("call", "median", "ratio", "added"),
        )
    print(f"\nface detector alone (detect_faces): {ms(median(face_times))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
