"""The ``clipcrop`` command.

Each subcommand lives in its own module of this package (``clipcrop.cli.<name>``) exposing ``add_arguments(parser)`` and
``run(args) -> int`` (and optionally ``check(args)``); those modules import torch and the model
only inside ``run``. Before ``run``, :func:`clipcrop.cli.checks.check_arguments` checks the flags
(paths, ranges, the model's ``config.json``), so ``clipcrop --help`` and every argument error
answer in a fraction of a second, without importing torch, transformers or spaCy.

Exit codes: 0 success, 1 some input failed (or a ClipCrop error), 2 usage error (argparse's, or
one ``clipcrop: error:`` line from the checks), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import ClipCropError
from .checks import UsageError, check_arguments

COMMANDS = {
    "crop": ("crop", "crop images for a text query, an image query, or none"),
    "detect": ("detect", "OWL-ViT's detections for a text or image query (boxes, scores, tokens)"),
    "serve": ("serve", "run the HTTP service and web page"),
    "batch": ("batch", "crop a folder or manifest at scale on Ray Data (resumable)"),
    "train": ("train", "train the ClipCrop decoder on GAIC with text annotations"),
    "evaluate": ("evaluate", "measure a model on GAIC or TextCrop-format data"),
    "check-data": ("check_data", "check a GAIC folder and its captions before training (every problem found)"),
    "finetune-backbone": ("finetune", "fine-tune OWL-ViT for open-vocabulary detection"),
    "demo-shapes": ("demo", "render synthetic scenes cropped for two queries each"),
    "make-random-backbone": ("make_random", "write a randomly initialised OWL-ViT (tests, speed work)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error line: the (sub)command's usage, then ``clipcrop: error: ...``."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"clipcrop: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="clipcrop",
        description="Conditioned smart cropping: ranked, aesthetic crops that show what you ask for.",
    )
    parser.add_argument("--version", action="version", version=f"clipcrop {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(f".{module_name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(module_name):
                continue  # subcommand not part of this build
            raise
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _check=getattr(module, "check", None))
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, reporting unknown flags with the usage of the subcommand they were given to (argparse
    alone reports them with the top-level usage, which does not show the subcommand's flags)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        owner = subparsers.choices.get(args.command, parser) if args.command else parser
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        check_arguments(args)
    except UsageError as exc:
        print(f"clipcrop: error: {exc}", file=sys.stderr)
        return 2
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    _quiet_libraries(args.verbose)
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:  # a setting only its command's module can check (cli_checks.validated)
        print(f"clipcrop: error: {exc}", file=sys.stderr)
        return 2
    except ClipCropError as exc:
        print(f"clipcrop: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("clipcrop: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _quiet_libraries(verbose: int) -> None:
    """transformers and huggingface_hub chatter (progress bars, warnings) off unless -vv."""
    import os

    if verbose < 2:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        for name in ("transformers", "huggingface_hub", "accelerate"):
            logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
