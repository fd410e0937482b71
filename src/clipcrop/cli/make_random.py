"""``clipcrop make-random-backbone --out DIR --tokenizer DIR [--size tiny|small|base32] [--kind owlvit|owlv2]``

Writes a randomly initialised OWL-ViT whose heads are calibrated on real photos to behave like a
pretrained model's (``--raw`` skips that: only for speed measurements or training from scratch).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the checkpoint to")
    p.add_argument(
        "--tokenizer", required=True, metavar="DIR", help="folder with CLIP's vocab.json and merges.txt"
    )
    p.add_argument(
        "--size",
        choices=["tiny", "small", "base32"],
        default="base32",
        help="tiny/small for tests, base32 = full-size OWL-ViT B/32 (default base32)",
    )
    p.add_argument(
        "--kind", choices=["owlvit", "owlv2"], default="owlvit", help="architecture (default owlvit)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--raw",
        action="store_true",
        help="leave the heads as initialised (degenerate boxes and saturated scores; speed work only)",
    )
    p.add_argument("--large-boxes", action="store_true", help="calibrate towards mostly large boxes")
    p.add_argument(
        "--varied-norms", action="store_true", help="class-embedding norms that vary from token to token"
    )
    p.add_argument(
        "--calibration-images",
        metavar="DIR",
        help="photos to calibrate on (default: the real photos shipped by scikit-image/matplotlib "
        "when installed, else synthetic scenes)",
    )


def run(args: argparse.Namespace) -> int:
    from ..errors import ParameterError
    from ..synthetic.random_models import make_random_owlvit

    images = None
    if args.calibration_images:
        from pathlib import Path

        from PIL import Image

        from ..io.images import is_image_path

        folder = Path(args.calibration_images)
        paths = sorted(p for p in folder.glob("*") if is_image_path(str(p))) if folder.is_dir() else []
        if not paths:
            raise ParameterError(f"--calibration-images {folder}: no images in that folder")
        images = [Image.open(p).convert("RGB") for p in paths]
    try:
        out = make_random_owlvit(
            args.out,
            args.tokenizer,
            size=args.size,
            seed=args.seed,
            kind=args.kind,
            calibrate=not args.raw,
            large_boxes=args.large_boxes,
            varied_norms=args.varied_norms,
            calibration_images=images,
        )
    except FileNotFoundError as exc:
        raise ParameterError(str(exc)) from None
    print(out)
    return 0
