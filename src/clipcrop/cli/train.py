"""``clipcrop train --gaic-root DIR --text-annotations DIR --backbone NAME_OR_DIR --out CKPT_DIR ...``

Parses flags into a :class:`clipcrop.training.config.TrainConfig` and calls :func:`clipcrop.training.trainer.train`.
Several GPUs: ``accelerate launch -m clipcrop.cli train ...``. The checkpoint folder can be passed
to ``clipcrop crop/evaluate --model``; ``--resume`` continues it exactly.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..modeling.decoder_config import DecoderConfig
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

#: ``--precision`` -> ``TrainConfig.mixed_precision``
PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
#: :data:`clipcrop.training.validation.BEST_METRICS`, spelled out so that ``--help`` imports no
#: library module (a test keeps them equal)
BEST_METRICS = (
    "acc1_5",
    "acc1_10",
    "acc_iou85_top5",
    "acc_iou85_top10",
    "acc_iou90_top5",
    "acc_iou90_top10",
    "iou_top1_best",
    "text_iou_mean",
    "text_iou_max",
)
#: steps a dry run trains (:data:`clipcrop.training.sizing.DRY_RUN_STEPS`; a test keeps them equal)
DRY_RUN_STEPS = 3

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


#: the short guide at the end of ``clipcrop train --help`` (the README's "Training guide" in full)
GUIDE = """\
data (check it first: clipcrop check-data --gaic-root GAIC --text-annotations CAPTIONS):
  GAIC/images/{train,val,test}/NAME.jpg      GAIC, journal version: 2636 / 200 / 500 images
  GAIC/annotations/{train,val,test}/NAME.txt  one rated crop per line: y1 x1 y2 x2 MOS (pixels, MOS 1..5)
  CAPTIONS/{train,valid,test}.json            ClipCrop's text annotations: {"NAME.jpg": "one caption", ...}

the paper's recipe (all defaults): variant full (text + keywords), mosaics (single, 2x2, 3x3 alike),
matching to MOS >= 4 crops, local redundancy at IoU 0.9, M = 90 crops, frozen OWL-ViT B/32. The paper
states no epochs, batch, learning rate or text drop: 30 epochs of batch 8 at lr 1e-4 (cosine) and
text drop 0.2 are this project's defaults. Aim for Acc1/5 79.8 on GAIC's test split (paper, Table 3),
IoU-Mean 0.5551 on Horanyi-PR, 0.4992 on TextCrop.

  clipcrop train --gaic-root GAIC --text-annotations CAPTIONS --out ckpt --dry-run   # size the run
  clipcrop train --gaic-root GAIC --text-annotations CAPTIONS --out ckpt             # --resume after a stop
  clipcrop evaluate --dataset gaic --root GAIC --annotations CAPTIONS --model ckpt/best
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = GUIDE
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    data = p.add_argument_group("data")
    data.add_argument("--gaic-root", required=True, metavar="DIR", help="GAIC folder (images/, annotations/)")
    data.add_argument(
        "--text-annotations",
        metavar="DIR",
        help="folder of the caption files train.json/valid.json/test.json (required unless --variant base; "
        "default: none)",
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
    run.add_argument(
        "--seed", type=int, default=0, help="seed of init, data order and augmentation (default 0)"
    )

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

    _add_output_flags(p.add_argument_group("output"))
    _add_validation_flags(p.add_argument_group("validation (at every epoch's end)"))


def _add_output_flags(out: argparse._ArgumentGroup) -> None:
    """Where the checkpoints go and how often, the device and precision, reporting, the dry run."""
    out.add_argument("--out", required=True, metavar="CKPT_DIR", help="checkpoint folder")
    add_checkpoint_flags(out)
    add_device_flags(out, what="train")
    precision = out.add_mutually_exclusive_group()
    precision.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        help="fp32, or bf16/fp16 mixed precision through Accelerate's autocast (fp16: CUDA only; "
        "bf16 also on CPUs that have it) (default fp32)",
    )
    precision.add_argument(
        "--mixed-precision",
        choices=["no", "fp16", "bf16"],
        help="the same as --precision, no = fp32 (default no)",
    )
    out.add_argument(
        "--no-feature-cache",
        dest="feature_cache",
        action="store_false",
        default=None,
        help="re-encode single images every time",
    )
    add_flags(out, "--quiet")
    out.add_argument(
        "--dry-run",
        action="store_true",
        help=f"set the run up, train {DRY_RUN_STEPS} throw-away steps and print the samples, steps per epoch, "
        "time and memory per step on the chosen device and the estimated run time; writes nothing",
    )


def _add_validation_flags(val: argparse._ArgumentGroup) -> None:
    """Validation each epoch and the choice of ``--out/best``."""
    val.add_argument(
        "--val-split",
        metavar="SPLIT",
        help="GAIC split validated on, 'none' for none (default val; skipped with a warning when "
        "GAIC_ROOT has no such split)",
    )
    val.add_argument(
        "--val-text",
        metavar="PATH",
        help="also validate on a TextCrop-format folder (annotations.json) or manifest: "
        "text_iou_mean, text_iou_max (default: none)",
    )
    val.add_argument(
        "--val-limit", type=int, metavar="N", help="validate on the first N samples (default: all)"
    )
    val.add_argument(
        "--best-metric",
        choices=list(BEST_METRICS),
        metavar="METRIC",
        help=f"the metric --out/best is chosen by, higher is better: {', '.join(BEST_METRICS)} "
        "(default acc1_5, or text_iou_mean with --val-text)",
    )


def check(args: argparse.Namespace) -> None:
    """Device and validation paths, before torch loads."""
    from .checks import UsageError

    check_device_flag(args.device)
    if args.val_text is not None and not Path(args.val_text).expanduser().exists():
        raise UsageError(f"--val-text {args.val_text}: no such file or folder")
    if args.val_limit is not None and args.val_limit < 1:
        raise UsageError(f"--val-limit must be at least 1, got {args.val_limit}")


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
        help="also fine-tune OWL-ViT's image side at this learning rate (saved as CKPT_DIR/backbone; "
        "default: the backbone stays frozen)",
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
    if args.precision is not None:
        given["mixed_precision"] = PRECISIONS[args.precision]
    if args.val_split is not None:
        given["val_split"] = None if args.val_split.lower() == "none" else args.val_split
    config = TrainConfig(
        gaic_root=args.gaic_root,
        text_annotations=args.text_annotations,
        finetune_backbone_lr=args.finetune_backbone_lr,
        val_text=args.val_text,
        val_limit=args.val_limit,
        best_metric=args.best_metric,
        **given,
        **run_settings(args),
    )
    with in_flag_words(args):
        return validated(config)  # a bad setting is a usage error (exit 2), found before anything loads


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _decoder_dests() -> list[str]:
    return [_dest(flag) for flag in DECODER_FLAGS]


def run(args: argparse.Namespace) -> int:
    config = build_config(args)  # setting errors before any data or model loads
    from ..training.trainer import Trainer

    main_process = int(os.environ.get("RANK", "0")) == 0  # accelerate launch / torchrun: one report
    with in_flag_words(args):
        if args.dry_run:
            report = Trainer(config).dry_run(DRY_RUN_STEPS)
            if main_process:
                print("\n".join(report.lines()))
            return 0
        lines = (
            ProgressLines(sys.stderr) if main_process and not args.quiet and not sys.stderr.isatty() else None
        )
        result = Trainer(config, on_step=lines).run()
    if not main_process:
        return 0
    print(f"{summary('trained', result, ('loss',))}; checkpoint {result.out_dir}", file=sys.stderr)
    return 0


class ProgressLines:
    """Progress for logs and pipes (where the bar stays off): a line every 1% of the run with the
    loss, the time per step and the ETA, e.g. ``clipcrop: step 99/9900 (1%), loss 0.4321,
    1.52 s/step, ETA 4 h 08 min``."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.started: float | None = None
        self.first_step = 0

    def __call__(self, record: dict) -> None:
        step, total = int(record["step"]), int(record["total_steps"])
        now = time.perf_counter()
        if self.started is None:
            self.started, self.first_step = now - record["step_time"], step - 1
        every = max(1, total // 100)
        if step % every and step != total:
            return
        per_step = (now - self.started) / max(1, step - self.first_step)
        print(
            f"clipcrop: step {step}/{total} ({100 * step // total}%), loss {record['loss']:.4f}, "
            f"{per_step:.2f} s/step, ETA {eta_text(per_step * (total - step))}",
            file=self.stream,
            flush=True,
        )


def eta_text(seconds: float) -> str:
    """``44 s``, ``12 min``, ``4 h 08 min`` (:func:`clipcrop.training.sizing.duration_text`)."""
    from ..training.sizing import duration_text

    return duration_text(seconds)
