"""``clipcrop detect IMAGE... (--query TEXT | --image-query PATH) [--top-k N] [--model M] [--json]``

OWL-ViT's own detections, the raw view the crops are built on (:meth:`clipcrop.ClipCrop.detect`):
per image the ``N`` image tokens with the highest logit for the query, best first. ``--json``
prints one :meth:`~clipcrop.modeling.detection.DetectionResult.to_dict` object per image on stdout (one per
line), otherwise a short table; an image that fails gets one ``clipcrop: error:`` line on stderr
(and, with ``--json``, an object whose ``error`` says why) and the exit status is 1. The text is
used whole (no keyword split), and the query is embedded once per run.

Boxes are float pixels (x0, y0, x1, y1) of the upright image, clamped to it; ``score`` is the
OWL-ViT probability (sigmoid of ``logit``), ``token`` the index of the image token.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..validation import MAX_DETECTIONS
from .crop import add_model_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders (recursive) or globs")
    cond = p.add_mutually_exclusive_group()
    cond.add_argument("--query", "-q", help="what to detect, in words (used whole, no keyword split)")
    cond.add_argument("--image-query", metavar="PATH", help="a reference image of what to detect")
    # dest "detections", not "top_k": the limit is MAX_DETECTIONS, not the model's number of crops
    # that cli_checks holds a crop's --top-k to
    p.add_argument(
        "--top-k",
        "-k",
        dest="detections",
        type=int,
        default=5,
        metavar="N",
        help=f"detections per image, best first (default 5, at most {MAX_DETECTIONS})",
    )
    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")


def check(args: argparse.Namespace) -> None:
    """detect's own checks (run by :func:`clipcrop.cli.checks.check_arguments`, before torch):
    exactly one of ``--query`` / ``--image-query`` (argparse refuses both), ``--top-k`` in range."""
    from ..errors import QueryError
    from ..validation import validate_top_k

    if args.query is None and args.image_query is None:
        raise QueryError("detect needs --query TEXT or --image-query PATH (what to detect)")
    validate_top_k(args.detections, MAX_DETECTIONS)


def run(args: argparse.Namespace) -> int:
    from ..errors import ClipCropError
    from ..io.inputs import expand_inputs
    from .crop import _prefetch, load_predictor

    if not hasattr(args, "_inputs"):  # run() called without the CLI's checks
        check(args)
    items = getattr(args, "_inputs", None) or expand_inputs(args.images)
    cc = load_predictor(args)
    condition = cc.prepare_condition(args.query, args.image_query, whole_text=True)
    failed = 0
    for item, loaded, error in _prefetch(items, cc.limits, 1):
        if error is not None:
            failed += 1
            _emit_error(args, item, error)
            continue
        try:
            for encoded in cc.encode_batch(loaded):
                _emit(args, cc.detect_encoded(encoded, condition, top_k=args.detections))
        except ClipCropError as exc:
            failed += len(loaded)
            for li in loaded:
                _emit_error(args, li.name, str(exc))
    return 1 if failed else 0


def _emit(args: argparse.Namespace, result) -> None:
    """One image's detections: its JSON object, or a header line and one line per detection."""
    if args.json:
        print(json.dumps(result.to_dict()), flush=True)
        return
    cond = f"query {result.query!r}" if result.query is not None else f"image query {result.image_query}"
    print(f"{result.image}  {result.width}x{result.height}  {cond}")
    for rank, det in enumerate(result, start=1):
        box = ",".join(f"{v:.1f}" for v in det.box)
        print(f"  {rank:>2}  score {det.score:.4f}  logit {det.logit:+.3f}  box {box}  token {det.token}")
    sys.stdout.flush()


def _emit_error(args: argparse.Namespace, image: str, message: str) -> None:
    """An image that failed: the error line on stderr and, with ``--json``, an object with ``error``."""
    if args.json:
        failure = {"image": image, "width": None, "height": None, "query": args.query}
        print(json.dumps({**failure, "detections": [], "error": message}), flush=True)
    print(f"clipcrop: error: {message}", file=sys.stderr, flush=True)
