"""``clipcrop finetune-backbone --data MANIFEST.jsonl --backbone NAME_OR_DIR --out DIR ...``

Parses flags into a :class:`clipcrop.finetune.FinetuneConfig` and calls
:func:`clipcrop.finetune.finetune_backbone`. The output folder is an ordinary OWL-ViT checkpoint:
pass it to ``clipcrop train --backbone`` or ``clipcrop crop --model``; ``--resume`` continues it
exactly. Progress goes to stderr (a bar when stderr is a terminal), the output folder to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        required=True,
        metavar="MANIFEST",
        help='JSON lines: {"image": path, "objects": [{"box": [x0, y0, x1, y1], "text": "a red circle"}]} '
        "(paths relative to the manifest, boxes in pixels)",
    )
    p.add_argument(
        "--backbone",
        default=None,
        metavar="NAME_OR_DIR",
        help="OWL-ViT/OWLv2 Hub id or folder to start from, e.g. one made by make-random-backbone "
        "(default $CLIPCROP_MODEL or google/owlvit-base-patch32)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (an OWL-ViT checkpoint)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, metavar="N", help="passes over the data (default 10)")
    length.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps")
    p.add_argument(
        "--stop-after",
        type=int,
        metavar="N",
        help="stop with a checkpoint after step N (continue with --resume)",
    )
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per step (default 8)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    p.add_argument(
        "--lr-schedule", choices=["constant", "cosine", "linear"], default="cosine", help="default cosine"
    )
    p.add_argument("--warmup-steps", type=int, default=0, metavar="N", help="linear LR warm-up")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm, 0 = off (default 1)")
    p.add_argument(
        "--num-negatives", type=int, default=16, metavar="N", help="absent-class texts per step (default 16)"
    )
    p.add_argument("--no-hflip", action="store_true", help="no horizontal flips (texts that say left/right)")
    p.add_argument(
        "--zoom",
        type=float,
        default=0.0,
        metavar="P",
        help="share of images zoomed in on a window that cuts no object",
    )
    p.add_argument("--freeze-text", action="store_true", help="train the image side only")
    p.add_argument("--train-token-embedding", action="store_true", help="also train the 49k-row token table")
    p.add_argument("--weight-focal", type=float, default=2.0, help="focal loss weight (default 2)")
    p.add_argument("--weight-l1", type=float, default=5.0, help="L1 box loss weight (default 5)")
    p.add_argument("--weight-giou", type=float, default=2.0, help="GIoU loss weight (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of data order, flips and negatives")
    p.add_argument("--max-samples", type=int, metavar="N", help="use the first N images only")
    p.add_argument("--save-every", type=int, metavar="N", help="checkpoint every N steps (and at the end)")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue the checkpoint in --out exactly")
    resume.add_argument("--overwrite", action="store_true", help="replace a checkpoint in --out")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_config(args: argparse.Namespace):
    """CLI flags -> :class:`clipcrop.finetune.FinetuneConfig` (validated)."""
    from .backbone import DEFAULT_BACKBONE
    from .finetune import FinetuneConfig

    config = FinetuneConfig(
        data=args.data,
        backbone=args.backbone or os.environ.get("CLIPCROP_MODEL") or DEFAULT_BACKBONE,
        out_dir=args.out,
        epochs=args.epochs,
        max_steps=args.max_steps,
        stop_after=args.stop_after,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps,
        num_negatives=args.num_negatives,
        hflip=not args.no_hflip,
        zoom=args.zoom,
        train_text=not args.freeze_text,
        train_token_embedding=args.train_token_embedding,
        weight_focal=args.weight_focal,
        weight_l1=args.weight_l1,
        weight_giou=args.weight_giou,
        device="cpu" if args.cpu else "auto",
        save_every=args.save_every,
        resume=args.resume,
        overwrite=args.overwrite,
        seed=args.seed,
        max_samples=args.max_samples,
        progress=False if args.quiet else None,
    )
    config.validate()
    return config


def run(args: argparse.Namespace) -> int:
    config = build_config(args)  # flag errors before anything heavy is imported
    from .finetune import finetune_backbone

    result = finetune_backbone(config)
    last = result.history[-1] if result.history else None
    summary = f"clipcrop: fine-tuned to step {result.step}/{result.total_steps} in {result.elapsed_s:.1f} s"
    if last is not None:
        summary += ", " + ", ".join(
            f"{k} {last[k]:.4f}" for k in ("loss", "loss_focal", "loss_l1", "loss_giou")
        )
    print(summary, file=sys.stderr)
    print(result.out_dir)
    return 0
