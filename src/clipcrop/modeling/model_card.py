"""The model card (``README.md``) of a ClipCrop checkpoint: the paper, the model, how it was trained
and, once ``clipcrop evaluate`` has scored it, its results.

``huggingface_hub``'s default card for a ``PyTorchModelHubMixin`` says "Code: <repo_url>" and
"Paper: [More Information Needed]"; a ClipCrop checkpoint knows far more. Everything the card says
comes from the checkpoint's ``config.json`` and weights, so the card can be written again at any
time (:func:`write_card`) and travels with ``push_to_hub``:

* the model: backbone, decoder sizes (M crops), token-selection settings and the paper's variant;
* ``"training"`` (written by ``clipcrop train``, see :func:`training_summary`): data (GAIC split,
  caption files, sample count), steps done and the settings (batch size, learning rate and
  schedule, mosaic, text drop, seed, backbone fine-tuning);
* ``"evaluation"`` (written by :func:`record_evaluation`, which ``clipcrop evaluate`` calls for a
  local checkpoint): per dataset and split, the metrics, the sample count and the SHA-256 of the
  ``model.safetensors`` that was scored. Results of other weights (a checkpoint trained further
  after its evaluation) are left off the card, so it never reports numbers its weights did not get.

Nothing is ever "[More Information Needed]": what a checkpoint does not know is said in words
("not recorded", "not evaluated yet") with the command that fills it in.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..io.atomic_files import write_atomic
from ..model_source import is_clipcrop_checkpoint
from .selection_settings import VARIANTS

PAPER_TITLE = "ClipCrop: Conditioned Cropping Driven by Vision-Language Model"
PAPER_VENUE = "ICCV 2023"
PAPER_ARXIV = "2305.19262"
PAPER_URL = f"https://arxiv.org/abs/{PAPER_ARXIV}"
CARD_NAME = "README.md"
WEIGHTS_NAME = "model.safetensors"

#: TrainConfig fields the card reports as training settings, in this order
_TRAINING_SETTINGS = (
    "variant",
    "epochs",
    "max_steps",
    "batch_size",
    "lr",
    "lr_schedule",
    "warmup_steps",
    "weight_decay",
    "grad_clip",
    "mosaic",
    "text_drop",
    "seed",
    "finetune_backbone_lr",
)


def training_summary(train_config: dict, step: int, num_samples: int | None = None) -> dict:
    """What a checkpoint records of its training run (stored in ``config.json`` as ``"training"``):
    the settings by name, ``steps`` and ``data``.

    Args:
        train_config: ``TrainConfig.to_dict()`` of the run.
        step: optimizer steps done when the checkpoint was saved.
        num_samples: training samples (images with their crops and captions).
    """
    data = {
        "dataset": "GAIC",
        "split": train_config.get("split", "train"),
        "gaic_root": _name(train_config.get("gaic_root")),
        "captions": _name(train_config.get("text_annotations")),
        "samples": num_samples,
    }
    settings = {k: train_config[k] for k in _TRAINING_SETTINGS if train_config.get(k) is not None}
    return {**settings, "steps": int(step), "data": data}


def _name(path: Any) -> str | None:
    """A dataset location as the card shows it: its folder or file name (not the trainer's disk layout)."""
    return Path(str(path)).name or str(path) if path else None


def weights_digest(folder: str | os.PathLike) -> str | None:
    """SHA-256 (hex) of the checkpoint's ``model.safetensors``, or None without one."""
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _front_matter(config: dict) -> str:
    tags = ["image-cropping", "owlvit", "clipcrop", "vision-language", "pytorch_model_hub_mixin"]
    lines = ["---", "library_name: clipcrop", "tags:", *(f"- {t}" for t in tags)]
    training = config.get("training") or {}
    if (training.get("data") or {}).get("dataset") == "GAIC":
        lines += ["datasets:", "- GAICD"]
    return "\n".join([*lines, "---"])


def _model_section(config: dict) -> list[str]:

    decoder = config.get("decoder") or {}
    selection = config.get("selection") or {}
    variant = next(
        (name for name, v in VARIANTS.items() if all(selection.get(k) == val for k, val in v.items())),
        "custom",
    )
    return [
        "## Model",
        "",
        f"- Backbone: `{config.get('backbone', 'unknown')}` (OWL-ViT / OWLv2, image and text towers)",
        f"- Decoder: {decoder.get('num_layers', '?')} layers, d_model {decoder.get('d_model', '?')}, "
        f"{decoder.get('num_heads', '?')} heads, M = {decoder.get('num_queries', '?')} ranked crops",
        f"- Conditioning: variant `{variant}` of the paper's section 4.6 (full text: "
        f"{selection.get('use_full_text')}, keywords: {selection.get('use_keywords')}, text: "
        f"{selection.get('use_text')}; token score threshold {selection.get('min_score')})",
        f"- Checkpoint format: `{config.get('clipcrop_format', '?')}`",
    ]


def _training_section(config: dict) -> list[str]:
    training = config.get("training")
    out = ["## Training", ""]
    if not training:
        return out + [
            "Not recorded in this checkpoint (it was not written by `clipcrop train`). "
            "`clipcrop train --gaic-root GAIC --text-annotations CAPTIONS --out DIR` records the data "
            "and settings here."
        ]
    data = training.get("data") or {}
    source = f"{data.get('dataset', '?')} `{data.get('split', '?')}` split"
    if data.get("gaic_root"):
        source += f" (`{data['gaic_root']}`)"
    if data.get("captions"):
        source += f" with the ClipCrop text annotations (`{data['captions']}`)"
    if data.get("samples") is not None:
        source += f", {data['samples']} samples"
    settings = ", ".join(f"{k} {v}" for k, v in training.items() if k not in ("steps", "data"))
    return out + [
        f"- Data: {source}",
        f"- Steps: {training.get('steps', '?')}",
        f"- Settings: {settings or 'defaults'}",
    ]


def _evaluation_section(config: dict, digest: str | None) -> list[str]:
    entries = [
        e for e in config.get("evaluation") or [] if digest is not None and e.get("weights_sha256") == digest
    ]
    out = ["## Evaluation", ""]
    if not entries:
        return out + [
            "Not evaluated yet with these weights. `clipcrop evaluate --dataset gaic|textcrop --root DATA "
            "--model DIR` scores the checkpoint and adds its results here."
        ]
    for entry in entries:
        metrics = entry.get("metrics") or {}
        names = [k for k in metrics if k != "num_samples"]
        title = f"{entry.get('dataset', '?')}"
        title += f" `{entry['split']}`" if entry.get("split") else ""
        out += [f"{title}, {entry.get('samples', '?')} samples ({entry.get('mode', 'trained')} mode):", ""]
        out += ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        out += ["| " + " | ".join(f"{float(metrics[k]):.4f}" for k in names) + " |", ""]
    return out


def render_card(config: dict, digest: str | None) -> str:
    """The card's text for a checkpoint with ``config`` (its ``config.json``) and weights ``digest``."""
    lines = [
        _front_matter(config),
        "",
        "# ClipCrop checkpoint",
        "",
        f"Paper: [{PAPER_TITLE}]({PAPER_URL}) ({PAPER_VENUE}, arXiv {PAPER_ARXIV}). Give it a photo and "
        "what you want (a sentence, a reference image, or nothing) and it returns ranked, "
        "aesthetically good crops that show it.",
        "",
        "```python",
        "from clipcrop import ClipCrop",
        "",
        'cc = ClipCrop.from_pretrained("THIS_FOLDER_OR_REPO")',
        'crops = cc.crop("photo.jpg", query="a woman and three dogs on the boat", top_k=5)',
        "```",
        "",
        *_model_section(config),
        "",
        *_training_section(config),
        "",
        *_evaluation_section(config, digest),
    ]
    return "\n".join(lines).rstrip() + "\n"


def read_config(folder: str | os.PathLike) -> dict:
    """The checkpoint's ``config.json`` (an empty dict when missing or unreadable)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def write_card(folder: str | os.PathLike) -> Path:
    """(Re)write ``folder/README.md`` from the checkpoint's ``config.json`` and weights."""
    text = render_card(read_config(folder), weights_digest(folder))
    return write_atomic(Path(folder) / CARD_NAME, text.encode("utf-8"))


def record_evaluation(folder: str | os.PathLike, entry: dict) -> Path:
    """Store one evaluation (``dataset``, ``split``, ``samples``, ``mode``, ``metrics``) in the
    checkpoint's ``config.json`` for the weights it holds, replacing an earlier one of the same
    dataset and split, and rewrite the card. Returns the card's path."""
    folder = Path(folder)
    config = read_config(folder)
    digest = weights_digest(folder)
    record = {**entry, "weights_sha256": digest}
    same = (entry.get("dataset"), entry.get("split"))
    kept = [e for e in config.get("evaluation") or [] if (e.get("dataset"), e.get("split")) != same]
    config["evaluation"] = [*kept, record]
    write_atomic(
        folder / "config.json", (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8")
    )
    return write_card(folder)


def is_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a local ClipCrop checkpoint (its ``config.json`` has the format marker)."""
    return Path(folder).is_dir() and is_clipcrop_checkpoint(read_config(folder))


__all__ = [
    "PAPER_URL",
    "is_checkpoint",
    "read_config",
    "record_evaluation",
    "render_card",
    "training_summary",
    "weights_digest",
    "write_card",
]
