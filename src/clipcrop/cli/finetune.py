"""``clipcrop finetune-backbone --data MANIFEST.jsonl --backbone NAME_OR_DIR --out DIR ...``

Parses flags into a :class:`clipcrop.training.finetune_config.FinetuneConfig` and calls
:func:`clipcrop.training.finetune.finetune_backbone`. The output folder is an ordinary OWL-ViT checkpoint:
pass it to ``clipcrop train --backbone`` or ``clipcrop crop --model``; ``--resume`` continues it
exactly. Progress goes to stderr (a bar when stderr is a terminal), the output folder to stdout.
"""

from __future__ import annotations

import argparse
import sys

from .run_flags import (
    add_checkpoint_flags,
    add_device_flags,
    add_flags,
    add_schedule_flags,
    check_device_flag,
    in_flag_words,
    run_settings,
    summary,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        required=True,
        metavar="MANIFEST",
        help='JSON lines: {"image": path, "objects": [{"box": [x0, y0, x1, y1], "text": "a red circle", '
        '"other_texts": ["a circle"]}]} (paths relative to the manifest, boxes in pixels; other_texts, '
        "optional: other names the object is a positive for)",
    )
    p.add_argument(
        "--backbone",
        default=None,
        metavar="NAME_OR_DIR",
        help="OWL-ViT/OWLv2 Hub id or folder to start from, e.g. one made by make-random-backbone "
        "(default $CLIPCROP_MODEL or google/owlvit-base-patch32)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (an OWL-ViT checkpoint)")
    add_schedule_flags(
        p,
        default_epochs=10,
        batch_help="images per step",
        lr_help="AdamW learning rate (default 1e-4)",
        grad_clip=1.0,
    )
    p.add_argument(
        "--num-negatives", type=int, default=16, metavar="N", help="absent-class texts per step (default 16)"
    )
    p.add_argument("--no-hflip", action="store_true", help="no horizontal flips (texts that say left/right)")
    p.add_argument(
        "--zoom",
        type=float,
        default=0.0,
        metavar="P",
        help="share of images zoomed in on a window that cuts no object (default 0)",
    )
    p.add_argument("--freeze-text", action="store_true", help="train the image side only")
    p.add_argument("--train-token-embedding", action="store_true", help="also train the 49k-row token table")
    p.add_argument("--weight-focal", type=float, default=2.0, help="focal loss weight (default 2)")
    add_flags(p, "--weight-l1", "--weight-giou")
    p.add_argument("--seed", type=int, default=0, help="seed of data order, flips and negatives (default 0)")
    add_flags(p, "--max-samples")
    add_checkpoint_flags(p)
    add_device_flags(p, what="fine-tune")
    add_flags(p, "--quiet")


def check(args: argparse.Namespace) -> None:
    check_device_flag(args.device)


def build_config(args: argparse.Namespace):
    """CLI flags -> :class:`clipcrop.training.finetune_config.FinetuneConfig` (validated)."""
    from ..training.finetune_config import FinetuneConfig
    from .checks import validated

    config = FinetuneConfig(
        data=args.data,
        num_negatives=args.num_negatives,
        hflip=not args.no_hflip,
        zoom=args.zoom,
        train_text=not args.freeze_text,
        train_token_embedding=args.train_token_embedding,
        weight_focal=args.weight_focal,
        **run_settings(args),
    )
    with in_flag_words(args):
        return validated(config)  # a bad setting is a usage error (exit 2), found before anything loads


def run(args: argparse.Namespace) -> int:
    config = build_config(args)  # setting errors before any data or model loads
    from ..training.finetune import finetune_backbone

    with in_flag_words(args):
        result = finetune_backbone(config)
    print(summary("fine-tuned", result, ("loss", "loss_focal", "loss_l1", "loss_giou")), file=sys.stderr)
    print(result.out_dir)
    return 0
