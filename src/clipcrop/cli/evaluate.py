"""``clipcrop evaluate --dataset gaic|textcrop --root DIR [--annotations FILE] --model NAME_OR_DIR ...``

Parses flags into a :class:`clipcrop.evaluation.harness.EvalConfig` and runs
:func:`clipcrop.evaluation.harness.evaluate`. ``--json`` prints one JSON object on stdout
(``{"samples", "metrics", "baselines", ...}``) and the table on stderr; otherwise the table goes to
stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .crop import add_model_arguments
from .progress import ProgressBar


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=["gaic", "textcrop"], help="dataset format")
    p.add_argument("--root", required=True, metavar="DIR", help="dataset folder")
    p.add_argument(
        "--annotations",
        metavar="FILE",
        help="textcrop: the manifest (default ROOT/annotations.json); gaic: the caption folder or file "
        "(queries; without it GAIC is evaluated un-conditioned)",
    )
    p.add_argument("--split", default="test", help="GAIC split (default test)")
    add_model_arguments(p)
    p.add_argument("--baselines", action="store_true", help="also run the baselines on the same samples")
    p.add_argument(
        "--save-predictions", metavar="FILE", help="one JSON line per sample with the ranked crops"
    )
    p.add_argument("--limit", type=int, metavar="N", help="evaluate the first N samples only")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_config(args: argparse.Namespace):
    """CLI flags -> :class:`clipcrop.evaluation.harness.EvalConfig` (validated)."""
    from ..evaluation.harness import EvalConfig
    from .checks import validated

    config = EvalConfig(
        dataset=args.dataset,
        root=args.root,
        annotations=args.annotations,
        split=args.split,
        baselines=args.baselines,
        save_predictions=args.save_predictions,
        limit=args.limit,
    )
    return validated(config)  # a bad setting is a usage error (exit 2), found before anything loads


def run(args: argparse.Namespace) -> int:
    from ..evaluation.harness import evaluate, load_samples
    from .crop import load_predictor

    config = build_config(args)
    samples = load_samples(config)  # data errors before the model loads
    cc = load_predictor(args)
    show = not args.quiet and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    with ProgressBar("evaluating", len(samples), show) as bar:
        result = evaluate(config, cc, samples=samples, progress=bar.advance if bar.enabled else None)
    if args.json:
        print(json.dumps(result.to_json()), flush=True)
    _print_table(result, stderr=args.json)
    _record_in_checkpoint(args, config, result)
    return 0


def _record_in_checkpoint(args: argparse.Namespace, config, result) -> None:
    """A local ClipCrop checkpoint keeps the results (config.json) and shows them on its model card
    (a run on the first ``--limit`` samples only is not the checkpoint's evaluation: not recorded)."""
    from ..model_source import model_name
    from ..modeling.model_card import is_checkpoint, record_evaluation

    folder = model_name(args.model)
    if config.limit is not None or result.mode != "trained" or not is_checkpoint(folder):
        return
    # GAIC: its split; a TextCrop-format set: its folder's name (Horanyi-PR, TextCrop, ...)
    split = config.split if config.dataset == "gaic" else os.path.basename(os.path.normpath(config.root))
    entry = {
        "dataset": config.dataset,
        "split": split,
        "samples": result.samples,
        "mode": result.mode,
        "metrics": dict(result.metrics),
    }
    try:
        card = record_evaluation(folder, entry)
    except OSError as exc:  # a read-only checkpoint: the results are still printed
        print(f"clipcrop: warning: could not record the results in {folder} ({exc})", file=sys.stderr)
        return
    print(f"clipcrop: results recorded in {card} (model card) and config.json", file=sys.stderr)


def _print_table(result, *, stderr: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..evaluation.harness import TABLE_METRICS, result_rows

    keys = TABLE_METRICS[result.dataset]
    table = Table(title=f"{result.dataset}: {result.samples} samples")
    table.add_column("method")
    for key in keys:
        table.add_column(key, justify="right")
    table.add_column("n", justify="right")
    for name, metrics in result_rows(result):
        cells = [f"{metrics[k]:.4f}" if k in metrics else "-" for k in keys]
        table.add_row(name, *cells, str(metrics.get("num_samples", "")))
    Console(file=sys.stderr if stderr else sys.stdout, width=120).print(table)
    for reason in result.skipped:
        print(f"clipcrop: skipped {reason}", file=sys.stderr)
