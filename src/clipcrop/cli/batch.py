"""``clipcrop batch INPUT --out RESULTS.jsonl [--query TEXT] [--ray-address ...] ...``

Crops a folder or a JSONL manifest on Ray Data (see :mod:`clipcrop.batch.driver`): one JSON line per
input in RESULTS.jsonl (completion order), failures as lines with ``error``. Re-running the same
command after an interruption finishes the job: inputs already in the results are skipped. The
summary (done, failed, skipped, images/s) goes to stderr; stdout stays empty. Exit status 1 when
any input of the job has an error line, else 0.
"""

from __future__ import annotations

import argparse
import sys

from ..settings import ModelSettings
from .crop import add_crop_option_arguments, add_metadata_arguments, add_model_arguments, crop_options


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
        '{"image": PATH, "image_query": PATH}, each optionally with "top_k": N, "aspect": "W:H" '
        '(several: "1:1,4:5" or a list) and "size", "upscale", "keep", "avoid_box", "avoid", "faces" '
        "(as the flags; they replace the job's); manifest paths are relative to its folder",
    )
    p.add_argument(
        "--out", "-o", required=True, metavar="RESULTS.jsonl", help="results file, appended to and resumed"
    )
    cond = p.add_mutually_exclusive_group()
    cond.add_argument("--query", "-q", help="text query for every input that has no condition of its own")
    cond.add_argument(
        "--image-query",
        metavar="PATH",
        help="reference image for every input that has no condition of its own",
    )
    p.add_argument(
        "--top-k",
        "-k",
        type=int,
        default=5,
        metavar="N",
        help="crops per ratio of every input that sets none (default 5)",
    )
    add_crop_option_arguments(p, every=" of every input that sets none")
    p.add_argument(
        "--crops-out",
        metavar="DIR",
        help="also write each input's crops as DIR/<path>_crop<k>.jpg (as crop --out, at exactly "
        "--size when set; listed in crop_files)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace pictures that exist in --crops-out (default: a new job refuses them before starting)",
    )
    add_metadata_arguments(p)
    # a batch job uses a GPU whenever Ray gives its workers one
    add_model_arguments(
        p,
        defaults=ModelSettings(device="auto"),
        device_help="cpu, cuda or auto (a GPU per worker when the Ray cluster has GPUs)",
    )
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
    """batch's own flag checks (run by :func:`clipcrop.cli.checks.check_arguments`, before Ray)."""
    from pathlib import Path

    from ..errors import ParameterError

    args._options = crop_options(args)  # the job's own options, checked as crop checks them
    if args.num_workers is not None and args.num_workers < 1:
        raise ParameterError(f"--num-workers must be at least 1, got {args.num_workers}")
    if Path(args.out).is_dir():
        raise ParameterError(f"--out {args.out}: is a folder; give the results file (JSONL)")
    if (args.strip_metadata or args.strip_icc) and not args.crops_out:
        flag = "--strip-metadata" if args.strip_metadata else "--strip-icc"
        raise ParameterError(f"{flag} needs --crops-out DIR, the folder crops are written to")
    if args.crops_out and Path(args.crops_out).exists() and not Path(args.crops_out).is_dir():
        raise ParameterError(f"--crops-out {args.crops_out}: is a file; give the folder to write crops to")


def run(args: argparse.Namespace) -> int:
    from ..batch.config import BatchConfig
    from ..batch.driver import run_batch
    from ..batch.outputs import CropsExistError

    config = BatchConfig(
        input=args.input,
        out=args.out,
        query=args.query,
        image_query=args.image_query,
        top_k=args.top_k,
        aspect_ratio=args.aspect,
        size=args.size,
        upscale=args.upscale,
        keep=list(args.keep),
        avoid_box=list(args.avoid_box),
        avoid=list(args.avoid),
        faces=args.faces,
        crops_out=args.crops_out,
        overwrite=args.overwrite,
        strip_metadata=args.strip_metadata,
        strip_icc=args.strip_icc,
        model=args.model,
        backbone=args.backbone,
        device=args.device,
        precision=args.precision,
        quantize=args.quantize,
        max_megapixels=args.max_megapixels,
        ray_address=args.ray_address,
        num_workers=args.num_workers,
        batch_size=args.batch_size,
        verbose=getattr(args, "verbose", 0),
    )
    try:
        summary = run_batch(config)
    except CropsExistError as exc:  # found before anything ran: a usage error, like crop's
        print(
            f"clipcrop: error: {exc.what}; pass --overwrite to replace, or choose another --crops-out",
            file=sys.stderr,
            flush=True,
        )
        return 2
    print(summary.line(), file=sys.stderr, flush=True)
    return summary.exit_code
