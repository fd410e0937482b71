"""``clipcrop demo-shapes --model DIR --out DIR [--scenes N] [--seed N]``

Shows text conditioning at work without real weights: renders a few synthetic shapes scenes
(:mod:`clipcrop.synthetic.shapes`), crops each for two different queries ("the blue star", "the red
circle") and writes one picture per scene, the two overlays side by side (ranked crops drawn by
:func:`clipcrop.io.render.draw_overlay`; under each, the query and the IoU of its top-1 crop with the
shapes world's ideal frame for that object, :func:`clipcrop.synthetic.shapes.target_crops`, which the
framing rule :mod:`clipcrop.synthetic.framing_rule` draws: each kind its own frame shape and
coverage, lead room in front of triangles, headroom over stars). One JSON line per scene goes to
stdout with the same.

The model must know the shapes world: build one with the benchmark, which writes it to
``OUT/clipcrop-shapes``::

    python benchmarks/shapes/run.py --small --out OUT     # a few minutes on two CPU cores
    clipcrop demo-shapes --model OUT/clipcrop-shapes --out demo/

Demo scenes are drawn from indices far from the benchmark's (``1_000_000 + k``), so they are new
to the model; they may hold the benchmark's held-out colour-shape pairs
(:data:`clipcrop.synthetic.shapes.HELD_OUT_PAIRS`), and each query says whether it names one
(``"held_out_pair"``).
"""

from __future__ import annotations

import argparse
import json

#: demo scene ``k`` is ``make_scene(DEMO_OFFSET + k, seed)``: never a training scene
DEMO_OFFSET = 1_000_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        "-m",
        required=True,
        metavar="DIR",
        help="a model trained on shapes: OUT/clipcrop-shapes from 'python benchmarks/shapes/run.py --small --out OUT'",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the pictures (demo_<k>.jpg)")
    p.add_argument("--scenes", type=int, default=4, metavar="N", help="scenes to render (default 4)")
    p.add_argument("--seed", type=int, default=0, help="world seed of the scenes (default 0)")
    p.add_argument("--top-k", type=int, default=3, metavar="N", help="crops drawn per query (default 3)")


def _panel(overlays, captions, size: int):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(12, size // 22))
    band = size // 8
    out = Image.new("RGB", (size * len(overlays), size + band), "white")
    draw = ImageDraw.Draw(out)
    for i, (img, text) in enumerate(zip(overlays, captions, strict=True)):
        out.paste(img.resize((size, size)), (i * size, 0))
        draw.text((i * size + 8, size + band // 4), text, fill="black", font=font)
    return out


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from ..errors import ParameterError
    from ..io.render import draw_overlay, save_atomic
    from ..predictor import ClipCrop
    from ..synthetic.shapes import crop_iou, describe, distinct_pair, make_scene, target_crops

    if args.scenes < 1 or args.top_k < 1:
        raise ParameterError("--scenes and --top-k must be at least 1")
    cc = ClipCrop.from_pretrained(args.model)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    top_k = min(args.top_k, cc.max_top_k)
    for k in range(args.scenes):
        scene = make_scene(DEMO_OFFSET + k, args.seed)
        rng = np.random.default_rng([args.seed, DEMO_OFFSET + k, 17])
        pair = distinct_pair(scene, rng) or (0, 1)
        encoded = cc.encode(scene.image, name=f"scene {DEMO_OFFSET + k}")
        overlays, captions, queries = [], [], []
        for i in pair:
            query = describe(scene, [i])
            result = encoded.crop(query, top_k=top_k)
            boxes = [c.box for c in result]
            overlays.append(
                draw_overlay(scene.image, boxes, (scene.width, scene.height), [c.score for c in result])
            )
            best = target_crops(scene, [i], max_crops=1)[0]
            iou = crop_iou(np.asarray(boxes[0], dtype=np.float64), best) if boxes else 0.0
            captions.append(f'"{query}"  IoU {iou:.2f}')
            queries.append(
                {
                    "query": query,
                    "held_out_pair": scene.objects[i].held_out,
                    "crops": [c.to_dict() for c in result],
                    "best_crop": [round(float(v), 1) for v in best],
                    "iou_top1": round(iou, 4),
                }
            )
        path = save_atomic(_panel(overlays, captions, scene.width), out_dir / f"demo_{k}.jpg")
        record = {
            "scene": DEMO_OFFSET + k,
            "picture": str(path),
            "objects": describe(scene, range(len(scene.objects)), article=""),
            "mode": cc.mode,
            "queries": queries,
        }
        print(json.dumps(record), flush=True)
    return 0
