"""Make the README's "Media pipelines" picture: one overlay of a several-ratio call with faces.

    python scripts/readme_picture.py [--model DIR] [--out docs/media-pipelines.png] [--width 600]

Crops matplotlib's ``grace_hopper.jpg`` for 1:1, 4:5 and 16:9 in one call (``top_k=1`` each)
with ``faces=True``, and draws the overlay ``clipcrop crop --overlay`` draws (crops solid,
named by ratio; the face prior dashed, labelled ``face``) on the photo scaled to ``--width``
pixels, written as a palette PNG (small enough to commit; the photo is reduced to 160 colours
first, so that the overlay keeps its exact colours). ``--model`` defaults to ``$CLIPCROP_MODEL``
or OWL-ViT B/32 from the Hub; without network, pass a local folder (the picture in the README
was made with the calibrated random B/32 of ``clipcrop make-random-backbone --size base32``:
the face is kept whole by the prior whatever the weights).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

RATIOS = ["1:1", "4:5", "16:9"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="OWL-ViT folder or Hub id, or a ClipCrop checkpoint")
    ap.add_argument("--out", default="docs/media-pipelines.png")
    ap.add_argument("--width", type=int, default=600, help="width of the picture in pixels")
    args = ap.parse_args()
    logging.disable(logging.WARNING)

    import matplotlib
    from PIL import Image

    from clipcrop import ClipCrop
    from clipcrop.io.render import crop_names, draw_overlay

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = Image.open(photo).convert("RGB")
    cc = ClipCrop.from_pretrained(args.model)
    result = cc.crop(image, top_k=1, aspect_ratio=RATIOS, faces=True)
    names = crop_names([c.aspect for c in result], several=True)
    height = round(image.height * args.width / image.width)
    canvas = image.resize((args.width, height), Image.Resampling.LANCZOS)  # drawn at the final size
    # the photo gets a small palette first, so that the overlay's colours stay exact in the PNG
    canvas = canvas.quantize(colors=160, method=Image.Quantize.MEDIANCUT).convert("RGB")
    small = draw_overlay(
        canvas, [c.box for c in result], (result.width, result.height), names=names, priors=result.priors
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    small.quantize(colors=256, method=Image.Quantize.MAXCOVERAGE).save(out, optimize=True)
    for crop, name in zip(result, names, strict=True):
        print(f"{name}: {list(crop.box)}  focus {[round(v) for v in crop.focus]}")
    print(f"priors: {[p.to_dict() for p in result.priors]}")
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB, {args.width}x{height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
