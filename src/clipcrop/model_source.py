"""Where a model comes from, and what its ``config.json`` says, read without torch.

The CLI checks its arguments before anything heavy is imported (:mod:`clipcrop.cli.checks`). For
that it must know whether ``--model`` names a folder on this machine or a Hub id, whether that
folder holds a model at all, and how many crops the model ranks, since that number is the largest
``top_k``: ``--top-k 95`` must be refused with the same words before loading as after. All three
answers come from one small JSON file, read here with the standard library only (and, for a Hub
id, ``huggingface_hub``'s cache lookup, which makes no network call).

The messages are the ones :meth:`clipcrop.predictor.ClipCrop.from_pretrained` raises for the
same folders, so a user sees one wording whichever check finds the problem first.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ModelLoadError, ParameterError
from .limits import Limits

#: the model used when neither ``--model`` nor ``$CLIPCROP_MODEL`` names one
DEFAULT_BACKBONE = "google/owlvit-base-patch32"
#: M, the crops a model ranks when its config does not say otherwise: the paper's 90 decoder
#: queries, and what training-free mode (plain OWL-ViT weights) returns at most
DEFAULT_NUM_CROPS = 90
#: ``model_type`` values of the backbones ClipCrop runs on
MODEL_TYPES = ("owlvit", "owlv2")
#: the key that marks a trained ClipCrop checkpoint's ``config.json``
CHECKPOINT_MARKER = "clipcrop_format"

__all__ = [
    "DEFAULT_BACKBONE",
    "DEFAULT_NUM_CROPS",
    "is_clipcrop_checkpoint",
    "model_name",
    "looks_local",
    "local_config",
    "cached_hub_config",
    "model_config",
    "num_crops",
    "max_top_k",
]


def is_clipcrop_checkpoint(config: dict | None) -> bool:
    """Whether ``config`` (a ``config.json``) is a trained ClipCrop checkpoint's rather than plain
    OWL-ViT/OWLv2 weights': :meth:`clipcrop.modeling.model.ClipCropModel.save_pretrained` writes the
    :data:`CHECKPOINT_MARKER` key into every checkpoint. The one test of the mode a model runs in."""
    return isinstance(config, dict) and CHECKPOINT_MARKER in config


def model_name(name: str | os.PathLike | None) -> str:
    """The model a command uses: ``name``, else ``$CLIPCROP_MODEL``, else :data:`DEFAULT_BACKBONE`."""
    return str(name or os.environ.get("CLIPCROP_MODEL") or DEFAULT_BACKBONE)


def looks_local(name: str) -> bool:
    """True when ``name`` means a folder on this machine rather than a Hub id.

    A path that exists, one that starts with ``.``, ``/`` or ``~``, and one with more than one
    separator (``models/owlvit/b32``) are local; ``org/name`` that does not exist here is a Hub id.
    """
    if name.startswith((".", "/", "~")) or Path(name).expanduser().exists():
        return True
    parts = name.split("/")
    hub_shaped = len(parts) == 2 and all(parts)
    return os.sep in name and not hub_shaped


def folder_problem(name: str) -> str | None:
    """Why the local path ``name`` cannot be a model folder (missing, a file, no ``config.json``),
    as the one-line message every surface prints; None when it can be."""
    path = Path(name).expanduser()
    if not path.exists():
        return f"{name}: no such folder"
    if not path.is_dir():
        return f"{name}: is a file; pass the folder that holds config.json and the weights"
    if not (path / "config.json").is_file():
        return f"{name}: folder has no config.json; it is not a saved OWL-ViT or ClipCrop model"
    return None


def local_config(name: str, *, backbone_only: bool = False) -> dict:
    """``config.json`` of a local model folder, checked to be a model ClipCrop can load.

    Args:
        name: the folder.
        backbone_only: accept OWL-ViT/OWLv2 folders only (``train --backbone``), not ClipCrop
            checkpoints.

    Raises:
        ModelLoadError: no such folder, a file, no or invalid ``config.json``, or another kind of
            model; the message says which.
    """
    problem = folder_problem(name)
    if problem:
        raise ModelLoadError(problem)
    cfg = Path(name).expanduser() / "config.json"
    try:
        config = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{name}: config.json is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{name}: config.json is not a JSON object")
    if backbone_only and config.get("model_type") not in MODEL_TYPES:
        raise ModelLoadError(
            f"{name!r} is a {config.get('model_type')!r} model; ClipCrop needs an OWL-ViT or OWLv2 "
            f"detection checkpoint (for example {DEFAULT_BACKBONE!r})"
        )
    if not is_clipcrop_checkpoint(config) and config.get("model_type") not in MODEL_TYPES:
        raise ModelLoadError(
            f"{name!r} is neither an OWL-ViT/OWLv2 checkpoint nor a ClipCrop checkpoint "
            f"(config.json has model_type={config.get('model_type')!r})"
        )
    return config


def cached_hub_config(name: str) -> dict | None:
    """``config.json`` of a Hub model if the local Hugging Face cache holds it, else None.

    Never touches the network: a model that was not downloaded yet simply has no known config.
    """
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - an invalid repo id, an unreadable cache: nothing known
        return None
    if not isinstance(found, str):
        return None
    try:
        config = json.loads(Path(found).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def model_config(name: str) -> dict | None:
    """The config of ``name`` as far as it is known without loading: a local folder's (checked by
    :func:`local_config`, which raises for a folder that is not a model) or the cached Hub one."""
    return local_config(name) if looks_local(name) else cached_hub_config(name)


def num_crops(config: dict | None) -> int:
    """M, the crops the model described by ``config`` ranks: a ClipCrop checkpoint's
    ``decoder.num_queries``, else :data:`DEFAULT_NUM_CROPS`."""
    if is_clipcrop_checkpoint(config):
        decoder = config.get("decoder")
        n = decoder.get("num_queries") if isinstance(decoder, dict) else None
        if isinstance(n, int) and not isinstance(n, bool) and n >= 1:
            return n
    return DEFAULT_NUM_CROPS


def max_top_k(config: dict | None, limits: Limits) -> int:
    """The largest ``top_k``: the model's M, capped by ``limits.max_top_k`` (``CLIPCROP_MAX_TOP_K``).

    Raises:
        ParameterError: ``limits.max_top_k`` is set below 1.
    """
    n = num_crops(config)
    if limits.max_top_k is None:
        return n
    if limits.max_top_k < 1:
        raise ParameterError(
            f"the top_k limit (CLIPCROP_MAX_TOP_K) must be at least 1, got {limits.max_top_k}"
        )
    return min(n, limits.max_top_k)
