"""The argument checks of every ``clipcrop`` subcommand, run before anything heavy is imported.

:func:`clipcrop.cli.main.main` calls :func:`check_arguments` on the parsed flags of the subcommand
before its ``run``. Whatever is wrong there is a usage error: one ``clipcrop: error: ...`` line
and exit status 2, seconds before a model would have loaded and without importing torch,
transformers or spaCy. Errors found later (an unreadable image, weights that fail to load) are
exit status 1.

The checks go by the flags' ``dest`` names, so a subcommand gets them by spelling its flags like
the others do:

* ``model`` / ``backbone``: a local folder must exist and hold a model's ``config.json``
  (``backbone``: an OWL-ViT/OWLv2 one; next to ``model``, only for a trained checkpoint);
* ``top_k``: 1 .. the model's number of crops (read from that ``config.json``, see
  :mod:`clipcrop.model_source`), capped by ``CLIPCROP_MAX_TOP_K``, the same limit and message as
  after loading; ``aspect``: valid ``W:H`` ratios (commas between several); ``query``: a valid text query;
* ``images``: every file, folder or glob must exist or match; ``image_query``, ``input``,
  ``root``, ``annotations``, ``gaic_root``, ``text_annotations``, ``data``: must exist;
* counts (``batch_size``, ``workers``, ``limit``) at least 1, ``port`` in
  1..65535, sizes (``max_megapixels``, ``max_upload_mb``) positive, ``quantize`` with
  ``precision``/``device``.

A subcommand module may also define ``check(args)`` for checks of its own (``cli.build_parser``
stores it as ``args._check``); it is called last, and must not import torch either.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypeVar

from ..errors import ClipCropError, ParameterError
from ..limits import Limits

__all__ = ["UsageError", "check_arguments", "validated"]

T = TypeVar("T")

#: dest -> (flag, what must be there): "file", "folder" or "path" (either)
EXISTING_PATHS: dict[str, tuple[str, str]] = {
    "image_query": ("--image-query", "file"),
    "input": ("INPUT", "path"),
    "root": ("--root", "folder"),
    "annotations": ("--annotations", "path"),
    "gaic_root": ("--gaic-root", "folder"),
    "text_annotations": ("--text-annotations", "path"),
    "data": ("--data", "file"),
}
#: dest -> flag of the whole numbers that must be at least 1
COUNTS = {"batch_size": "--batch-size", "workers": "--workers", "limit": "--limit"}
#: dest -> flag of the sizes that must be positive
SIZES = {"max_megapixels": "--max-megapixels", "max_upload_mb": "--max-upload-mb"}
#: most missing inputs named in the one error line
_SHOWN_MISSING = 3


class UsageError(ClipCropError):
    """A command-line argument is wrong: the CLI prints the message and exits with status 2."""

    code = "usage_error"


def check_arguments(args: argparse.Namespace) -> None:
    """Check every flag of a parsed subcommand that can be checked without loading anything.

    Also stores the expanded image list as ``args._inputs`` (for ``images``), so that the command
    does not walk its folders twice.

    Raises:
        UsageError: the first problem found, with a message fit for one line.
    """
    try:
        _check_numbers(args)
        limits = Limits.from_env(
            max_pixels=int(args.max_megapixels * 1e6) if getattr(args, "max_megapixels", None) else None
        )
        _check_paths(args)
        config = _check_model(args)
        _check_condition(args, limits, config)
        if getattr(args, "images", None) is not None:
            args._inputs = _expand_images(args.images)
        own = getattr(args, "_check", None)
        if own is not None:
            own(args)
    except UsageError:
        raise
    except ClipCropError as exc:
        raise UsageError(str(exc)) from exc


def validated(config: T) -> T:
    """``config.validate()`` with its error as a :class:`UsageError` (exit status 2).

    For the run settings whose classes live beside torch (``TrainConfig``, ``FinetuneConfig``,
    ``EvalConfig``): checked in ``run``, after that import but before any data or model loads.
    """
    try:
        config.validate()  # type: ignore[attr-defined]
    except ClipCropError as exc:
        raise UsageError(str(exc)) from exc
    return config


def _check_numbers(args: argparse.Namespace) -> None:
    for dest, flag in COUNTS.items():
        value = getattr(args, dest, None)
        if value is not None and value < 1:
            raise ParameterError(f"{flag} must be at least 1, got {value}")
    for dest, flag in SIZES.items():
        value = getattr(args, dest, None)
        if value is not None and not value > 0:
            raise ParameterError(f"{flag} must be positive, got {value:g}")
    port = getattr(args, "port", None)
    if port is not None and not 0 < port < 65536:
        raise ParameterError(f"--port must be between 1 and 65535, got {port}")
    quantize, precision = getattr(args, "quantize", None), getattr(args, "precision", "fp32")
    if quantize == "int8" and precision != "fp32":
        # the same words as ClipCrop.from_pretrained, which refuses the same combination
        raise ParameterError(f"quantize int8 cannot be combined with precision {precision}; use fp32")
    device = str(getattr(args, "device", None) or "cpu")
    if quantize == "int8" and device != "auto" and not device.startswith("cpu"):
        raise ParameterError(f"quantize int8 runs on CPU only, not on device {device!r}")


def _check_paths(args: argparse.Namespace) -> None:
    for dest, (flag, kind) in EXISTING_PATHS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        path = Path(value).expanduser()
        if not path.exists():
            raise ParameterError(f"{flag} {value}: no such {'file or folder' if kind == 'path' else kind}")
        if kind == "file" and not path.is_file():
            raise ParameterError(f"{flag} {value}: is a folder, not a file")
        if kind == "folder" and not path.is_dir():
            raise ParameterError(f"{flag} {value}: is a file, not a folder")


def _check_model(args: argparse.Namespace) -> dict | None:
    """The model's config as far as it is known here (None: a Hub id not in the cache)."""
    from ..model_source import (
        cached_hub_config,
        is_clipcrop_checkpoint,
        local_config,
        looks_local,
        model_name,
    )

    backbone = getattr(args, "backbone", None)
    # train, finetune-backbone: the OWL-ViT/OWLv2 weights to start from (default $CLIPCROP_MODEL);
    # the commands that load a --model: a trained checkpoint's backbone, only when given
    if hasattr(args, "backbone") and (backbone is not None or not hasattr(args, "model")):
        name = model_name(backbone)
        if looks_local(name) and not _on_cluster_only(args, name):
            local_config(name, backbone_only=True)
    if not hasattr(args, "model"):
        return None
    name = model_name(args.model)
    if not looks_local(name):
        config = cached_hub_config(name)
    elif _on_cluster_only(args, name):
        return None
    else:
        config = local_config(name)
    if backbone is not None and config is not None and not is_clipcrop_checkpoint(config):
        raise ParameterError(
            f"--backbone is for trained ClipCrop checkpoints; {name!r} is an OWL-ViT model itself "
            "(drop --backbone, or pass those weights as --model)"
        )
    return config


def _on_cluster_only(args: argparse.Namespace, name: str) -> bool:
    """A path for the Ray cluster's machines (``batch --ray-address``), not necessarily on this one."""
    return bool(getattr(args, "ray_address", None)) and not Path(name).expanduser().exists()


def _check_condition(args: argparse.Namespace, limits: Limits, config: dict | None) -> None:
    from ..crop_options import parse_aspects
    from ..model_source import max_top_k
    from ..validation import validate_query, validate_query_pair, validate_top_k

    validate_query_pair(getattr(args, "query", None), getattr(args, "image_query", None))
    validate_query(getattr(args, "query", None), limits)
    if getattr(args, "top_k", None) is not None:
        validate_top_k(args.top_k, max_top_k(config, limits))
    parse_aspects(getattr(args, "aspect", None))  # one ratio or several (W:H,W:H)


def _expand_images(images: list[str]) -> list:
    """Expand IMAGE arguments; a missing file or a glob that matches nothing is a usage error."""
    from ..io.inputs import expand_inputs

    items = expand_inputs(images)
    missing = [item.error for item in items if item.error is not None]
    if missing:
        more = len(missing) - _SHOWN_MISSING
        shown = "; ".join(missing[:_SHOWN_MISSING]) + (f"; and {more} more" if more > 0 else "")
        raise ParameterError(shown)
    return items
