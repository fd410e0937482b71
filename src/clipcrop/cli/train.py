"""``clipcrop train --gaic-root DIR --text-annotations DIR --backbone NAME_OR_DIR --out CKPT_DIR ...``

Parses flags into a :class:`clipcrop.training.config.TrainConfig` and calls :func:`clipcrop.training.trainer.train`.
Several GPUs: ``accelerate launch -m clipcrop.cli train ...``. The checkpoint folder can be passed
to ``clipcrop crop/evaluate --model``; ``--resume`` continues it exactly.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..modeling.decoder_config import DecoderConfig
from .run_flags import add_checkpoint_flags, add_flags, add_schedule_flags, run_settings, summary

#: decoder flags (their defaults are :class:`DecoderConfig`'s): flag -> (type, help)
DECODER_FLAGS = {
    "--num-queries": (int, "crops per image"),
    "--d-model": (int, "decoder width"),
    "--num-layers": (int, "decoder layers"),
    "--num-heads": (int, "attention heads"),
    "--ffn-dim": (int, "feed-forward width"),
    "--dropout": (float, "decoder dropout"),
}
#: dests of the flags that set a TrainConfig field of the same name only when given
CONFIG_FLAGS = (
    "split",
    "num_workers",
    "variant",
    "mosaic",
    "text_drop",
    "weight_score",
    "aux_loss",
    "positive_mos",
    "mixed_precision",
    "feature_cache",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--gaic-root", required=True, metavar="DIR", help="GAIC folder (images/, annotations/)")
    data.add_argument(
        "--text-annotations",
        metavar="DIR",
        help="folder of the caption files train.json/valid.json/test.json (required unless --variant base)",
    )
    data.add_argument("--split", help="GAIC split to train on (default train)")
    add_flags(data, "--max-samples")
    data.add_argument("--num-workers", type=int, metavar="N", help="data-loading processes (default 0)")

    _add_model_flags(p.add_argument_group("model"))

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
    aug.add_argument(
        "--no-mosaic", dest="mosaic", action="store_false", default=None, help="train on single images only"
    )
    aug.add_argument(
        "--text-drop",
        type=float,
        metavar="P",
        help="share of samples trained without their text, so the checkpoint also crops "
        "un-conditioned (default 0.2)",
    )
    aug.add_argument("--weight-score", type=float, help="score loss weight (default 1)")
    add_flags(aug, "--weight-l1", "--weight-giou")
    aug.add_argument(
        "--no-aux-loss",
        dest="aux_loss",
        action="store_false",
        default=None,
        help="losses on the last decoder layer only",
    )
    aug.add_argument("--positive-mos", type=float, help="MOS of a positive crop (default 4)")

    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="CKPT_DIR", help="checkpoint folder")
    add_checkpoint_flags(out)
    out.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], help="GPU only (default no)")
    add_flags(out, "--cpu")
    out.add_argument(
        "--no-feature-cache",
        dest="feature_cache",
        action="store_false",
        default=None,
        help="re-encode single images every time",
    )
    add_flags(out, "--quiet")


def _add_model_flags(model: argparse._ArgumentGroup) -> None:
    """The backbone, the variant and the decoder's sizes (defaults: :class:`DecoderConfig`'s)."""
    model.add_argument(
        "--backbone",
        default=None,
        metavar="NAME_OR_DIR",
        help="OWL-ViT/OWLv2 Hub id or folder (default $CLIPCROP_MODEL or google/owlvit-base-patch32)",
    )
    model.add_argument(
        "--variant",
        choices=["full", "key", "main", "base"],
        help="text used for token selection: full text + keywords (ClipCrop), keywords only, "
        "full text only, or none (default full)",
    )
    for flag, (kind, text) in DECODER_FLAGS.items():
        dest = _dest(flag)
        default = getattr(DecoderConfig, dest)
        metavar = "N" if kind is int else "P"
        model.add_argument(flag, type=kind, metavar=metavar, help=f"{text} (default {default:g})")
    model.add_argument(
        "--finetune-backbone-lr",
        type=float,
        metavar="LR",
        help="also fine-tune OWL-ViT's image side at this learning rate (saved as CKPT_DIR/backbone)",
    )


def build_config(args: argparse.Namespace):
    """CLI flags -> :class:`clipcrop.training.config.TrainConfig` (validated). A flag not given
    leaves the config's own default (:class:`TrainConfig`, :class:`DecoderConfig`): one copy."""
    from ..training.config import DEFAULT_DECODER, TrainConfig
    from .checks import validated

    given = {dest: getattr(args, dest) for dest in CONFIG_FLAGS if getattr(args, dest) is not None}
    sizes = {dest: getattr(args, dest) for dest in _decoder_dests() if getattr(args, dest) is not None}
    if sizes:
        given["decoder"] = {**DEFAULT_DECODER, **sizes}
    config = TrainConfig(
        gaic_root=args.gaic_root,
        text_annotations=args.text_annotations,
        finetune_backbone_lr=args.finetune_backbone_lr,
        **given,
        **run_settings(args),
    )
    return validated(config)  # a bad setting is a usage error (exit 2), found before anything loads


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _decoder_dests() -> list[str]:
    return [_dest(flag) for flag in DECODER_FLAGS]


def run(args: argparse.Namespace) -> int:
    config = build_config(args)  # setting errors before any data or model loads
    from ..training.trainer import train

    result = train(config)
    if int(os.environ.get("RANK", "0")) != 0:  # accelerate launch: one summary
        return 0
    print(f"{summary('trained', result, ('loss',))}; checkpoint {result.out_dir}", file=sys.stderr)
    return 0
