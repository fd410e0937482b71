"""Randomly initialised OWL-ViT checkpoints, for tests and speed work without the Hub.

Speed does not depend on weight values, so a full-size random ViT-B/32 measures real costs;
tiny ones make tests fast. Both are saved as ordinary OWL-ViT folders (config, safetensors,
tokenizer, preprocessor config) and loaded through the same ``from_pretrained`` path as real
weights. The CLIP BPE vocabulary is not shipped with ClipCrop: pass a folder holding CLIP's
``vocab.json`` and ``merges.txt``. A trained-mode checkpoint with a random decoder on such a
backbone: :func:`clipcrop.build.build_random_checkpoint`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

SIZES = {
    # vision: image size, patch, width, layers, heads; text: width, layers, heads
    "tiny": {
        "image_size": 96,
        "patch_size": 16,
        "v_hidden": 32,
        "v_layers": 2,
        "v_heads": 4,
        "t_hidden": 32,
        "t_layers": 2,
        "t_heads": 4,
        "projection_dim": 32,
    },
    "small": {
        "image_size": 192,
        "patch_size": 16,
        "v_hidden": 96,
        "v_layers": 4,
        "v_heads": 4,
        "t_hidden": 64,
        "t_layers": 2,
        "t_heads": 4,
        "projection_dim": 64,
    },
    "base32": {
        "image_size": 768,
        "patch_size": 32,
        "v_hidden": 768,
        "v_layers": 12,
        "v_heads": 12,
        "t_hidden": 512,
        "t_layers": 12,
        "t_heads": 8,
        "projection_dim": 512,
    },
}


def make_random_owlvit(
    out_dir: str | os.PathLike,
    tokenizer_dir: str | os.PathLike,
    size: str | dict[str, int] = "tiny",
    seed: int = 0,
    *,
    kind: str = "owlvit",
    calibrate: bool = False,
    large_boxes: bool = False,
    varied_norms: bool = False,
    calibration_images: Sequence[Image.Image] | None = None,
) -> Path:
    """Write a randomly initialised OWL-ViT (or OWLv2) checkpoint to ``out_dir``; return its path.

    Args:
        out_dir: folder to create.
        tokenizer_dir: folder with CLIP's ``vocab.json`` and ``merges.txt``.
        size: ``"tiny"`` (96 px, 36 tokens), ``"small"`` (192 px, 144 tokens) or ``"base32"``
            (the real ViT-B/32 shape: 768 px, 576 tokens); or a shape of one's own, a dict with
            the keys of :data:`SIZES`' entries (e.g. the shapes benchmark's backbone).
        kind: ``"owlvit"`` or ``"owlv2"`` (OWLv2's architecture, objectness head and processor).
        calibrate: rescale the heads so outputs look like a pretrained model's
            (:mod:`clipcrop.synthetic.calibration`); raw random heads are degenerate (zero-sized boxes,
            saturated probabilities) and only fit speed measurements or training from scratch.
        large_boxes, varied_norms: calibration variants (mostly large boxes; class-embedding
            norms that vary from token to token), where image-query rules differ.
        calibration_images: photos to calibrate on (default: real photos of installed packages).
    """
    import torch
    from transformers import CLIPTokenizer

    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    s = _shape(size)
    vocab, merges = _clip_vocabulary(Path(tokenizer_dir))
    config_cls, model_cls, processor_cls = _classes(kind)
    config = _config(config_cls, s, len(vocab))
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!")
    tokenizer.model_max_length = 16
    side = {"height": s["image_size"], "width": s["image_size"]}
    processor = processor_cls(size=side) if kind == "owlv2" else processor_cls(size=side, crop_size=side)
    if calibrate:
        from .calibration import calibrate_heads, default_calibration_images

        images = list(calibration_images) if calibration_images else default_calibration_images()
        calibrate_heads(
            model, processor, tokenizer, images, large_boxes=large_boxes, varied_norms=varied_norms, seed=seed
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)
    from ..io.atomic_files import apply_umask

    apply_umask(out / "model.safetensors")  # safetensors writes 0600 whatever the umask
    return out


def _shape(size: str | dict[str, int]) -> dict[str, int]:
    """The shape ``size`` names (a key of :data:`SIZES`) or is (a dict with all of its keys)."""
    if isinstance(size, dict):
        missing = set(SIZES["tiny"]) - set(size)
        if missing:
            raise ValueError(f"size dict lacks {', '.join(sorted(missing))}")
        return size
    if size in SIZES:
        return SIZES[size]
    raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")


def _clip_vocabulary(tok_dir: Path) -> tuple[dict[str, int], list[tuple[str, ...]]]:
    """CLIP's BPE vocabulary and merges from ``tok_dir`` (``vocab.json``, ``merges.txt``)."""
    vocab_file, merges_file = tok_dir / "vocab.json", tok_dir / "merges.txt"
    if not vocab_file.is_file() or not merges_file.is_file():
        raise FileNotFoundError(f"{tok_dir} must hold CLIP's vocab.json and merges.txt")
    vocab = json.loads(vocab_file.read_text())
    merges = [tuple(line.split()) for line in merges_file.read_text().splitlines()[1:] if line.strip()]
    return vocab, merges


def _config(config_cls, s: dict[str, int], vocab_size: int):
    """An OWL-ViT/OWLv2 config of shape ``s`` (text: 16 positions, as OWL-ViT reads)."""
    return config_cls(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": s["t_hidden"],
            "intermediate_size": 4 * s["t_hidden"],
            "num_hidden_layers": s["t_layers"],
            "num_attention_heads": s["t_heads"],
            "max_position_embeddings": 16,
            "pad_token_id": 0,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
        },
        vision_config={
            "image_size": s["image_size"],
            "patch_size": s["patch_size"],
            "hidden_size": s["v_hidden"],
            "intermediate_size": 4 * s["v_hidden"],
            "num_hidden_layers": s["v_layers"],
            "num_attention_heads": s["v_heads"],
        },
        projection_dim=s["projection_dim"],
    )


KINDS = ("owlvit", "owlv2")


def _classes(kind: str):
    """(config, detection model, PIL image processor) classes of an OWL-ViT generation."""
    if kind == "owlv2":
        from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil

        return Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessorPil

    return OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessorPil
