"""``clipcrop train --gaic-root DIR --text-annotations DIR --backbone NAME_OR_DIR --out CKPT_DIR ...``

Parses flags into a :class:`clipcrop.training.config.TrainConfig` and calls :func:`clipcrop.training.trainer.train`.
Several GPUs: ``accelerate launch -m clipcrop.cli train ...``. The checkpoint folder can be passed
to ``clipcrop crop/evaluate --model``; ``--resume`` continues it exactly.
"""

from __future__ import annotations

import argparse
import os
import sys

from .run_flags import add_checkpoint_flags, add_flags, add_schedule_flags, run_settings, summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--gaic-root", required=True, metavar="DIR", help="GAIC folder (images/, annotations/)")
    data.add_argument(
        "--text-annotations",
        metavar="DIR",
        help="folder of the caption files train.json/valid.json/test.json (required unless --variant base)",
    )
    data.add_argument("--split", default="train", help="GAIC split to train on (default train)")
    add_flags(data, "--max-samples")
    data.add_argument("--num-workers", type=int, default=0, metavar="N", help="data-loading processes")

    model = p.add_argument_group("model")
    model.add_argument(
        "--backbone",
        default=None,
        metavar="NAME_OR_DIR",
        help="OWL-ViT/OWLv2 Hub id or folder (default $CLIPCROP_MODEL or google/owlvit-base-patch32)",
    )
    model.add_argument(
        "--variant",
        choices=["full", "key", "main", "base"],
        default="full",
        help="text used for token selection: full text + keywords (ClipCrop), keywords only, "
        "full text only, or none (default full)",
    )
    model.add_argument(
        "--num-queries", type=int, default=90, metavar="M", help="crops per image (default 90)"
    )
    model.add_argument("--d-model", type=int, default=256, help="decoder width (default 256)")
    model.add_argument("--num-layers", type=int, default=6, help="decoder layers (default 6)")
    model.add_argument("--num-heads", type=int, default=8, help="attention heads (default 8)")
    model.add_argument("--ffn-dim", type=int, default=1024, help="feed-forward width (default 1024)")
    model.add_argument("--dropout", type=float, default=0.1, help="decoder dropout (default 0.1)")
    model.add_argument(
        "--finetune-backbone-lr",
        type=float,
        metavar="LR",
        help="also fine-tune OWL-ViT's image side at this learning rate (saved as CKPT_DIR/backbone)",
    )

    run = p.add_argument_group("schedule")
    add_schedule_flags(
        run,
        default_epochs=30,
        batch_help="images per step and process",
        lr_help="decoder learning rate (default 1e-4)",
        grad_clip=0.1,
    )
    run.add_argument("--seed", type=int, default=0, help="seed of init, data order and augmentation")

    aug = p.add_argument_group("augmentation and losses")
    aug.add_argument("--no-mosaic", action="store_true", help="train on single images only")
    aug.add_argument(
        "--text-drop",
        type=float,
        default=0.2,
        metavar="P",
        help="share of samples trained without their text, so the checkpoint also crops "
        "un-conditioned (default 0.2)",
    )
    aug.add_argument("--weight-score", type=float, default=1.0, help="score loss weight (default 1)")
    add_flags(aug, "--weight-l1", "--weight-giou")
    aug.add_argument("--no-aux-loss", action="store_true", help="losses on the last decoder layer only")
    aug.add_argument("--positive-mos", type=float, default=4.0, help="MOS of a positive crop (default 4)")

    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="CKPT_DIR", help="checkpoint folder")
    add_checkpoint_flags(out)
    out.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no", help="GPU only")
    add_flags(out, "--cpu")
    out.add_argument("--no-feature-cache", action="store_true", help="re-encode single images every time")
    add_flags(out, "--quiet")


def build_config(args: argparse.Namespace):
    """CLI flags -> :class:`clipcrop.training.config.TrainConfig` (validated)."""
    from ..training.config import TrainConfig
    from .checks import validated

    config = TrainConfig(
        gaic_root=args.gaic_root,
        text_annotations=args.text_annotations,
        split=args.split,
        variant=args.variant,
        mosaic=not args.no_mosaic,
        text_drop=args.text_drop,
        decoder={
            "num_queries": args.num_queries,
            "d_model": args.d_model,
            "num_layers": args.num_layers,
            "num_heads": args.num_heads,
            "ffn_dim": args.ffn_dim,
            "dropout": args.dropout,
        },
        weight_score=args.weight_score,
        aux_loss=not args.no_aux_loss,
        positive_mos=args.positive_mos,
        finetune_backbone_lr=args.finetune_backbone_lr,
        mixed_precision=args.mixed_precision,
        num_workers=args.num_workers,
        feature_cache=not args.no_feature_cache,
        **run_settings(args),
    )
    return validated(config)  # a bad setting is a usage error (exit 2), found before anything loads


def run(args: argparse.Namespace) -> int:
    config = build_config(args)  # setting errors before any data or model loads
    from ..training.trainer import train

    result = train(config)
    if int(os.environ.get("RANK", "0")) != 0:  # accelerate launch: one summary
        return 0
    print(f"{summary('trained', result, ('loss',))}; checkpoint {result.out_dir}", file=sys.stderr)
    return 0
