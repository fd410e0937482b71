"""``clipcrop make-random-backbone --out DIR --tokenizer DIR [--size tiny|small|base32]``"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the checkpoint to")
    p.add_argument(
        "--tokenizer", required=True, metavar="DIR", help="folder with CLIP's vocab.json and merges.txt"
    )
    p.add_argument(
        "--size",
        choices=["tiny", "small", "base32"],
        default="base32",
        help="tiny/small for tests, base32 = full-size OWL-ViT B/32 (default)",
    )
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from .random_models import make_random_owlvit

    try:
        out = make_random_owlvit(args.out, args.tokenizer, size=args.size, seed=args.seed)
    except FileNotFoundError as exc:
        from .errors import ParameterError

        raise ParameterError(str(exc)) from None
    print(out)
    return 0
