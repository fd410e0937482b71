"""OWL-ViT / OWLv2 as ClipCrop's encoder (paper section 3.1).

ClipCrop needs, per image, the image tokens ``t_img`` (N x D), one initial box per token
``b_ini`` and the per-token class embeddings that text or image queries are matched against;
per query, a text embedding (or an image-query embedding chosen as OWL-ViT's image-guided
detection chooses it). :class:`Backbone` exposes exactly those pieces, computed once per image
(:meth:`Backbone.encode`) so that many queries cost only a matrix product each.

Boxes leave this module as **normalised xyxy relative to the upright image** (fractions of its
width and height). OWL-ViT stretches the image to a square, so its normalised boxes already are
image fractions; OWLv2 pads to a square first (bottom/right), so its boxes are rescaled here by
``side / width`` and ``side / height``. Nothing downstream has to know which backbone ran.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .box_ops import box_cxcywh_to_xyxy, box_iou
from .errors import ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "google/owlvit-base-patch32"
SUPPORTED_TYPES = ("owlvit", "owlv2")


@dataclass
class ImageFeatures:
    """Per-image outputs of the backbone that ClipCrop uses.

    Attributes:
        tokens: (B, N, D) image tokens ``t_img`` (OWL-ViT's ``image_embeds`` flattened).
        boxes: (B, N, 4) initial boxes ``b_ini``, normalised xyxy relative to the upright image.
        class_embeds: (B, N, Dq) L2-normalised class embeddings (what queries are compared with).
        logit_shift: (B, N) OWL-ViT's learned per-token logit shift.
        logit_scale: (B, N) OWL-ViT's learned per-token logit scale (already ``elu + 1``).
    """

    tokens: torch.Tensor
    boxes: torch.Tensor
    class_embeds: torch.Tensor
    logit_shift: torch.Tensor
    logit_scale: torch.Tensor

    def __getitem__(self, index: int | slice) -> ImageFeatures:
        """Slice the batch dimension, keeping it (``feats[i]`` has B = 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return ImageFeatures(
            self.tokens[index],
            self.boxes[index],
            self.class_embeds[index],
            self.logit_shift[index],
            self.logit_scale[index],
        )

    def logits(self, query_embeds: torch.Tensor) -> torch.Tensor:
        """OWL-ViT's detection logits of every token for every query.

        Args:
            query_embeds: (Q, Dq) text or image-query embeddings (any norm).
        Returns:
            (B, N, Q) logits; ``sigmoid`` gives OWL-ViT's detection probability.
        """
        q = query_embeds.to(self.class_embeds.dtype)
        q = q / (q.norm(dim=-1, keepdim=True) + 1e-6)
        sim = torch.einsum("bnd,qd->bnq", self.class_embeds, q)
        return (sim + self.logit_shift[..., None]) * self.logit_scale[..., None]


@dataclass(frozen=True)
class Preprocessing:
    """How images become ``pixel_values``; read from the checkpoint's ``preprocessor_config.json``
    so the transform always matches the weights."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int
    pad_to_square: bool  # OWLv2: pad bottom/right to a square (value 0.5 after rescaling) first


class Backbone:
    """OWL-ViT (or OWLv2) detection model plus tokenizer and preprocessing.

    Build with :meth:`from_pretrained`. Thread-safe for inference (the text cache is locked).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        preprocessing: Preprocessing,
        name: str,
        text_cache_size: int = 1024,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.preprocessing = preprocessing
        self.name = name
        self.model_type: str = model.config.model_type
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._text_cache_size = text_cache_size
        self._lock = threading.Lock()
        self.text_cache_hits = 0
        self.text_cache_misses = 0

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_dir: str | os.PathLike = DEFAULT_BACKBONE,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        local_files_only: bool | None = None,
    ) -> Backbone:
        """Load an OWL-ViT / OWLv2 checkpoint from the Hugging Face Hub or a local folder.

        Raises:
            ModelLoadError: the folder or hub id cannot be loaded; the message says whether the Hub
                was unreachable or offline and how to pass a local folder instead.
        """
        from transformers import AutoConfig, AutoTokenizer, Owlv2ForObjectDetection, OwlViTForObjectDetection

        name = str(name_or_dir)
        kwargs = {} if local_files_only is None else {"local_files_only": local_files_only}
        try:
            config = AutoConfig.from_pretrained(name, **kwargs)
        except Exception as exc:  # noqa: BLE001 - transformers/huggingface_hub raise many types
            raise ModelLoadError(describe_load_failure(name, exc)) from exc
        if config.model_type not in SUPPORTED_TYPES:
            raise ModelLoadError(
                f"{name!r} is a {config.model_type!r} model; ClipCrop needs an OWL-ViT or OWLv2 detection "
                f"checkpoint (for example {DEFAULT_BACKBONE!r}) or a trained ClipCrop checkpoint"
            )
        model_cls = OwlViTForObjectDetection if config.model_type == "owlvit" else Owlv2ForObjectDetection
        try:
            model = model_cls.from_pretrained(name, dtype=dtype or torch.float32, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
            preprocessing = _read_preprocessing(name, config, kwargs)
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(describe_load_failure(name, exc)) from exc
        model.requires_grad_(False)
        return cls(model.to(device), tokenizer, preprocessing, name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def hidden_size(self) -> int:
        """D, the width of the image tokens."""
        return int(self.model.config.vision_config.hidden_size)

    # ------------------------------------------------------------------ images
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> (B, 3, S, S) float ``pixel_values`` on the backbone's device."""
        p = self.preprocessing
        arrays = []
        for img in images:
            if p.pad_to_square:
                side = max(img.size)
                canvas = Image.new("RGB", (side, side), (128, 128, 128))
                canvas.paste(img, (0, 0))
                img = canvas
            arr = np.asarray(img.resize((p.size, p.size), resample=p.resample), dtype=np.float32)
            arrays.append(arr)
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        mean = torch.tensor(p.mean).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(p.std).view(1, 3, 1, 1) * 255.0
        batch = (batch - mean) / std
        return batch.to(device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def encode(
        self, pixel_values: torch.Tensor, image_sizes: Sequence[tuple[int, int]] | None = None
    ) -> ImageFeatures:
        """Run the vision tower once and derive everything ClipCrop needs from it.

        Args:
            pixel_values: (B, 3, S, S) from :meth:`preprocess`.
            image_sizes: (width, height) of each upright image; needed for OWLv2's padding only.
        """
        return self.encode_with_grad(pixel_values, image_sizes)

    def encode_with_grad(
        self, pixel_values: torch.Tensor, image_sizes: Sequence[tuple[int, int]] | None = None
    ) -> ImageFeatures:
        """:meth:`encode` without ``no_grad`` (backbone fine-tuning)."""
        model = self.model
        feature_map = model.image_embedder(pixel_values=pixel_values)[0]  # (B, h, w, D)
        b, h, w, d = feature_map.shape
        tokens = feature_map.reshape(b, h * w, d)
        boxes = box_cxcywh_to_xyxy(model.box_predictor(tokens, feature_map))  # (B, N, 4) square-normalised
        if self.preprocessing.pad_to_square and image_sizes is not None:
            scale = torch.tensor(
                [
                    [max(wi, hi) / wi, max(wi, hi) / hi, max(wi, hi) / wi, max(wi, hi) / hi]
                    for wi, hi in image_sizes
                ],
                dtype=boxes.dtype,
                device=boxes.device,
            )
            boxes = boxes * scale[:, None, :]
        boxes = boxes.clamp(0.0, 1.0)
        head = model.class_head
        class_embeds = head.dense0(tokens)
        class_embeds = class_embeds / (class_embeds.norm(dim=-1, keepdim=True) + 1e-6)
        shift = head.logit_shift(tokens)[..., 0]
        scale_ = (F.elu(head.logit_scale(tokens)) + 1)[..., 0]
        return ImageFeatures(tokens, boxes, class_embeds, shift, scale_)

    # ------------------------------------------------------------------ queries
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Text embeddings (T, Dq), cached per string (LRU, bounded) so repeated queries are free."""
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
            self.text_cache_hits += len(texts) - len(missing)
            self.text_cache_misses += len(missing)
        if missing:
            fresh = self._embed_texts_uncached(missing)
            with self._lock:
                for text, emb in zip(missing, fresh, strict=True):
                    self._text_cache[text] = emb
                while len(self._text_cache) > self._text_cache_size:
                    self._text_cache.popitem(last=False)
        with self._lock:
            out = []
            for t in texts:
                emb = self._text_cache.get(t)
                if emb is None:  # evicted between the two locks by a huge batch: recompute
                    emb = self._embed_texts_uncached([t])[0]
                else:
                    self._text_cache.move_to_end(t)
                out.append(emb)
        return torch.stack(out)

    @torch.no_grad()
    def _embed_texts_uncached(self, texts: Sequence[str]) -> torch.Tensor:
        return self.text_features(texts).float().cpu()

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """(T, Dq) text embeddings on the model's device, in its dtype, *with* gradients when
        enabled: the one text-tower call, behind :meth:`embed_texts` (cached, no-grad) and
        backbone fine-tuning (which trains through it)."""
        max_len = int(self.model.config.text_config.max_position_embeddings)
        # pad to the longest text, not to 16: CLIP's text tower is causal and pools at the end
        # token, so padding after it cannot change the embedding, only cost time
        enc = self.tokenizer(
            list(texts), padding="longest", truncation=True, max_length=max_len, return_tensors="pt"
        )
        out = self.model.owlvit.get_text_features(
            input_ids=enc["input_ids"].to(self.device), attention_mask=enc["attention_mask"].to(self.device)
        )
        return out.pooler_output if hasattr(out, "pooler_output") else out

    @torch.no_grad()
    def embed_image_query(self, features: ImageFeatures) -> torch.Tensor:
        """One embedding (Dq,) for a query image, chosen as OWL-ViT's image-guided detection does.

        Among the query image's tokens whose box overlaps the whole image at >= 80% of the best
        IoU, take the one *least* similar to the mean embedding: the most distinctive object,
        not the background.

        Args:
            features: :class:`ImageFeatures` of the query image (B = 1).
        """
        boxes = features.boxes[0].float()
        whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=boxes.device)
        ious = box_iou(whole, boxes)[0][0]
        selected = (ious >= ious.max() * 0.8).nonzero().flatten()
        embeds = features.class_embeds[0].float()
        mean = embeds.mean(dim=0)
        best = selected[torch.argmin(embeds[selected] @ mean)]
        return embeds[best].cpu()


def _read_preprocessing(name: str, config, kwargs: dict) -> Preprocessing:
    """Preprocessing settings from the checkpoint's ``preprocessor_config.json`` (defaults per model type)."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(name, **kwargs)
    settings = processor.to_dict()
    size = settings.get("size") or {}
    if isinstance(size, dict):
        side = int(size.get("height") or size.get("shortest_edge") or config.vision_config.image_size)
    else:
        side = int(size)
    return Preprocessing(
        size=side,
        mean=tuple(float(v) for v in settings["image_mean"]),
        std=tuple(float(v) for v in settings["image_std"]),
        resample=int(settings.get("resample") or Image.BICUBIC),
        pad_to_square=config.model_type == "owlv2",
    )


def describe_load_failure(name: str, exc: BaseException) -> str:
    """A message that says what failed to load, why, and what to do next."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    looks_local = name.startswith((".", "/", "~")) or os.sep in name and not _looks_like_hub_id(name)
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir():
            missing = [f for f in ("config.json",) if not (path / f).exists()]
            if missing:
                return (
                    f"{name}: folder has no {', '.join(missing)}; it is not a saved OWL-ViT or ClipCrop model"
                )
            return f"{name}: cannot load the model in this folder ({type(exc).__name__}: {exc})"
        return f"{name}: is a file; pass the folder that holds config.json and the weights"
    if looks_local:
        return f"{name}: no such folder"
    text = f"{type(exc).__name__}: {exc}"
    if offline:
        return (
            f"cannot load {name!r}: HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache. "
            f"Download it on a machine with internet access (huggingface-cli download {name}) "
            f"or pass a local folder with --model /path/to/folder"
        )
    hint = (
        "the Hugging Face Hub could not be reached"
        if _is_connection_error(exc)
        else "it is not a model on the Hugging Face Hub or a local folder"
    )
    return (
        f"cannot load {name!r}: {hint} ({text.splitlines()[0][:300]}). "
        f"Pass a local folder holding an OWL-ViT or ClipCrop checkpoint with --model /path/to/folder "
        f"(or CLIPCROP_MODEL), or set HF_HUB_OFFLINE=1 to use the local cache only"
    )


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/"))


def _is_connection_error(exc: BaseException) -> bool:
    seen = 0
    while exc is not None and seen < 8:
        cls = type(exc).__name__.lower()
        msg = str(exc).lower()
        if any(k in cls for k in ("connect", "timeout", "offline")) or any(
            k in msg for k in ("connection", "resolve", "network", "offline", "couldn't connect", "timed out")
        ):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def is_backbone_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a local folder with an OWL-ViT/OWLv2 ``config.json``."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") in SUPPORTED_TYPES
    except (OSError, ValueError):
        return False
