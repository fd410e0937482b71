"""``clipcrop check-data --gaic-root DIR [--text-annotations DIR] [--splits train,val,test]``

Checks a GAIC copy and its captions before a long run (:func:`clipcrop.data.gaic_check.check_gaic`)
and prints one line per problem on stdout (``PATH[:LINE]: error|warning: message``), then one
summary line per split and the totals. Exit status 0 when there is no error (warnings allowed),
1 otherwise, 2 for a usage error. Reads annotation files and image headers only: no torch.
"""

from __future__ import annotations

import argparse
import sys

SPLITS = ("train", "val", "test")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gaic-root", required=True, metavar="DIR", help="GAIC folder (images/, annotations/)")
    p.add_argument(
        "--text-annotations",
        metavar="DIR",
        help="folder of the caption files train.json/valid.json/test.json (default: captions not checked)",
    )
    p.add_argument(
        "--splits",
        default=",".join(SPLITS),
        metavar="LIST",
        help=f"comma-separated splits to check (default {','.join(SPLITS)})",
    )


def check(args: argparse.Namespace) -> None:
    """``--splits`` names known splits (a usage error otherwise, before anything is read)."""
    from .checks import UsageError

    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    bad = [s for s in splits if s not in SPLITS]
    if not splits or bad:
        raise UsageError(f"--splits takes a comma-separated list of {', '.join(SPLITS)}, got {args.splits!r}")
    args.splits = splits


def run(args: argparse.Namespace) -> int:
    from ..data.gaic_check import check_gaic

    report = check_gaic(args.gaic_root, args.text_annotations, args.splits)
    for problem in report.problems:
        print(problem)
    for summary in report.splits:
        print(summary)
    errors, warnings = len(report.errors), len(report.warnings)
    print(f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}")
    sys.stdout.flush()
    return 1 if errors else 0
