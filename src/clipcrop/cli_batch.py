"""``clipcrop batch INPUT --out RESULTS.jsonl [--query TEXT] [--ray-address ...] ...``

Crops a folder or a JSONL manifest on Ray Data (see :mod:`clipcrop.batch`): one JSON line per
input in RESULTS.jsonl (completion order), failures as lines with ``error``. Re-running the same
command after an interruption finishes the job: inputs already in the results are skipped. The
summary (done, failed, skipped, images/s) goes to stderr; stdout stays empty. Exit status 1 when
any input of the job has an error line, else 0.
"""

from __future__ import annotations

import argparse
import sys

from .cli_crop import add_model_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = (
        "RESULTS.jsonl gets one JSON line per input (as `clipcrop crop --json`), in completion order, "
        "not input order; failed inputs get a line with 'error'. Re-run the same command after an "
        "interruption: inputs that already have a line are skipped. Summary on stderr; exit status 1 "
        "when any input failed."
    )
    p.add_argument(
        "input",
        metavar="INPUT",
        help='folder (recursive) or JSONL manifest of {"image": PATH, "query": TEXT} or '
        '{"image": PATH, "image_query": PATH}; manifest paths are relative to its folder',
    )
    p.add_argument(
        "--out", "-o", required=True, metavar="RESULTS.jsonl", help="results file, appended to and resumed"
    )
    p.add_argument("--query", "-q", help="text query for every input that has none")
    add_model_arguments(p)
    for action in p._actions:  # a batch job uses a GPU whenever Ray gives its workers one
        if action.dest == "device":
            action.default = "auto"
            action.help = "cpu, cuda or auto (default auto: a GPU per worker when the Ray cluster has GPUs)"
    p.add_argument(
        "--ray-address",
        metavar="auto|ADDR",
        help="run on a Ray cluster ('auto' or HOST:PORT); default: a local Ray started for this job",
    )
    p.add_argument(
        "--num-workers",
        type=int,
        metavar="N",
        help="model workers (default: one per GPU when GPUs are used, else 1)",
    )
    p.add_argument(
        "--batch-size", type=int, default=1, metavar="N", help="images per backbone call (default 1)"
    )


def check(args: argparse.Namespace) -> None:
    """batch's own flag checks (run by :func:`clipcrop.cli_checks.check_arguments`, before Ray)."""
    from pathlib import Path

    from .errors import ParameterError

    if args.num_workers is not None and args.num_workers < 1:
        raise ParameterError(f"--num-workers must be at least 1, got {args.num_workers}")
    if Path(args.out).is_dir():
        raise ParameterError(f"--out {args.out}: is a folder; give the results file (JSONL)")


def run(args: argparse.Namespace) -> int:
    from .batch import BatchConfig, run_batch

    config = BatchConfig(
        input=args.input,
        out=args.out,
        query=args.query,
        model=args.model,
        device=args.device,
        precision=args.precision,
        quantize=args.quantize,
        max_megapixels=args.max_megapixels,
        ray_address=args.ray_address,
        num_workers=args.num_workers,
        batch_size=args.batch_size,
        verbose=getattr(args, "verbose", 0),
    )
    summary = run_batch(config)
    print(summary.line(), file=sys.stderr, flush=True)
    return summary.exit_code
