"""``clipcrop train --gaic-root DIR --text-annotations DIR --backbone NAME_OR_DIR --out CKPT_DIR ...``

Parses flags into a :class:`clipcrop.training.TrainConfig` and calls :func:`clipcrop.training.train`.
Several GPUs: ``accelerate launch -m clipcrop.cli train ...``. The checkpoint folder can be passed
to ``clipcrop crop/evaluate --model``; ``--resume`` continues it exactly.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--gaic-root", required=True, metavar="DIR", help="GAIC folder (images/, annotations/)")
    data.add_argument(
        "--text-annotations",
        metavar="DIR",
        help="folder of the caption files train.json/valid.json/test.json (required unless --variant base)",
    )
    data.add_argument("--split", default="train", help="GAIC split to train on (default train)")
    data.add_argument("--max-samples", type=int, metavar="N", help="use the first N images only")
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
    length = run.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, metavar="N", help="passes over the data (default 30)")
    length.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps")
    run.add_argument(
        "--stop-after",
        type=int,
        metavar="N",
        help="stop with a checkpoint after step N (continue with --resume)",
    )
    run.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per step and process")
    run.add_argument("--lr", type=float, default=1e-4, help="decoder learning rate (default 1e-4)")
    run.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    run.add_argument(
        "--lr-schedule", choices=["constant", "cosine", "linear"], default="cosine", help="default cosine"
    )
    run.add_argument("--warmup-steps", type=int, default=0, metavar="N", help="linear LR warm-up")
    run.add_argument("--grad-clip", type=float, default=0.1, help="max gradient norm, 0 = off (default 0.1)")
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
    aug.add_argument("--weight-l1", type=float, default=5.0, help="L1 box loss weight (default 5)")
    aug.add_argument("--weight-giou", type=float, default=2.0, help="GIoU loss weight (default 2)")
    aug.add_argument("--no-aux-loss", action="store_true", help="losses on the last decoder layer only")
    aug.add_argument("--positive-mos", type=float, default=4.0, help="MOS of a positive crop (default 4)")

    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="CKPT_DIR", help="checkpoint folder")
    out.add_argument("--save-every", type=int, metavar="N", help="checkpoint every N steps (and at the end)")
    resume = out.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue the checkpoint in --out exactly")
    resume.add_argument("--overwrite", action="store_true", help="replace a checkpoint in --out")
    out.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no", help="GPU only")
    out.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    out.add_argument("--no-feature-cache", action="store_true", help="re-encode single images every time")
    out.add_argument("--quiet", action="store_true", help="no progress bar")


def build_config(args: argparse.Namespace):
    """CLI flags -> :class:`clipcrop.training.TrainConfig` (validated)."""
    from .backbone import DEFAULT_BACKBONE
    from .training import TrainConfig

    config = TrainConfig(
        gaic_root=args.gaic_root,
        text_annotations=args.text_annotations,
        backbone=args.backbone or os.environ.get("CLIPCROP_MODEL") or DEFAULT_BACKBONE,
        out_dir=args.out,
        split=args.split,
        variant=args.variant,
        epochs=args.epochs,
        max_steps=args.max_steps,
        stop_after=args.stop_after,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps,
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
        weight_l1=args.weight_l1,
        weight_giou=args.weight_giou,
        aux_loss=not args.no_aux_loss,
        positive_mos=args.positive_mos,
        finetune_backbone_lr=args.finetune_backbone_lr,
        mixed_precision=args.mixed_precision,
        device="cpu" if args.cpu else "auto",
        save_every=args.save_every,
        resume=args.resume,
        overwrite=args.overwrite,
        seed=args.seed,
        num_workers=args.num_workers,
        feature_cache=not args.no_feature_cache,
        max_samples=args.max_samples,
        progress=False if args.quiet else None,
    )
    config.validate()
    return config


def run(args: argparse.Namespace) -> int:
    config = build_config(args)  # flag errors before anything heavy is imported
    from .training import train

    result = train(config)
    if int(os.environ.get("RANK", "0")) != 0:  # accelerate launch: one summary
        return 0
    last = result.history[-1] if result.history else None
    summary = f"clipcrop: trained to step {result.step}/{result.total_steps} in {result.elapsed_s:.1f} s"
    if last is not None:
        summary += f", loss {last['loss']:.4f}"
    print(f"{summary}; checkpoint {result.out_dir}", file=sys.stderr)
    return 0
