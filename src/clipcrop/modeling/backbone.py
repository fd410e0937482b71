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
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ModelLoadError
from ..model_source import DEFAULT_BACKBONE, MODEL_TYPES, folder_problem
from ..ops.box_ops import box_cxcywh_to_xyxy, box_iou, generalized_box_iou

logger = logging.getLogger(__name__)

#: the default model and the model types ClipCrop runs on, defined once (torch-free) in model_source
SUPPORTED_TYPES = MODEL_TYPES


@dataclass
class ImageFeatures:
    """Per-image outputs of the backbone that ClipCrop uses.

    Attributes:
        tokens: (B, N, D) image tokens ``t_img`` (OWL-ViT's ``image_embeds`` flattened).
        boxes: (B, N, 4) initial boxes ``b_ini``, normalised xyxy relative to the upright image,
            clamped to it.
        class_embeds: (B, N, Dq) L2-normalised class embeddings (what queries are compared with).
        logit_shift: (B, N) OWL-ViT's learned per-token logit shift.
        logit_scale: (B, N) OWL-ViT's learned per-token logit scale (already ``elu + 1``).
        raw_class_embeds: (B, N, Dq) the class head's ``dense0`` output before normalisation:
            OWL-ViT's image-guided detection picks its query token with these (their norms vary
            from token to token, so the rule differs from one on ``class_embeds``).
        model_boxes: (B, N, 4) the same boxes, xyxy normalised to the model's input frame (OWLv2:
            the padded square) and *not* clamped, as transformers' post-processing sees them.
        objectness: (B, N) OWLv2's objectness logits; None for OWL-ViT (it has no such head).
    """

    tokens: torch.Tensor
    boxes: torch.Tensor
    class_embeds: torch.Tensor
    logit_shift: torch.Tensor
    logit_scale: torch.Tensor
    raw_class_embeds: torch.Tensor | None = None
    model_boxes: torch.Tensor | None = None
    objectness: torch.Tensor | None = None

    def __post_init__(self) -> None:
        # hand-built features (tests, training caches) may omit the image-query extras
        if self.raw_class_embeds is None:
            self.raw_class_embeds = self.class_embeds
        if self.model_boxes is None:
            self.model_boxes = self.boxes

    def __getitem__(self, index: int | slice) -> ImageFeatures:
        """Slice the batch dimension, keeping it (``feats[i]`` has B = 1)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return ImageFeatures(
            **{
                f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[index])
                for f in fields(self)
            }
        )

    def to(self, device: torch.device | str) -> ImageFeatures:
        """All tensors moved to ``device``."""
        return ImageFeatures(
            **{
                f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                for f in fields(self)
            }
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
    """What the checkpoint's image processor does, for code that plans inputs around it.

    The pixels themselves always come from the checkpoint's own transformers image processor
    (``preprocessor_config.json``), so they match what the weights were trained with exactly.
    """

    size: int  # side of the square model input
    pad_to_square: bool  # OWLv2: pad bottom/right with black to a square before resizing


@dataclass(frozen=True)
class ImageQuery:
    """The embedding OWL-ViT's image-guided detection would use for a query image.

    Attributes:
        embedding: (Dq,) the chosen token's raw class embedding (float32, CPU).
        token: index of the chosen token among the query image's N tokens.
        box: (4,) that token's box, normalised xyxy of the upright query image.
    """

    embedding: torch.Tensor
    token: int
    box: torch.Tensor


class Backbone:
    """OWL-ViT (or OWLv2) detection model plus tokenizer and image processor.

    Build with :meth:`from_pretrained`. Thread-safe for inference (the text cache is locked).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        processor,
        name: str,
        text_cache_size: int = 1024,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.processor = processor
        self.preprocessing = _describe_processor(processor, model.config)
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
        from transformers import (
            AutoConfig,
            AutoImageProcessor,
            AutoTokenizer,
            Owlv2ForObjectDetection,
            OwlViTForObjectDetection,
        )

        name = str(name_or_dir)
        from .hub_access import stay_local

        local_files_only = stay_local(name, local_files_only)  # Hub unreachable: the cache, at once
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
        from ..io.progress import library_progress_off

        try:
            with library_progress_off():  # no "Loading weights" bar on a library caller's terminal
                model = model_cls.from_pretrained(name, dtype=dtype or torch.float32, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
            processor = AutoImageProcessor.from_pretrained(name, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(describe_load_failure(name, exc)) from exc
        model.requires_grad_(False)
        return cls(model.to(device), tokenizer, processor, name)

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

    @property
    def text_model(self) -> torch.nn.Module:
        """The CLIP part holding the text tower (``model.owlvit`` or ``model.owlv2``)."""
        return self.model.base_model

    @property
    def max_text_tokens(self) -> int:
        """How many tokens the text tower reads (16 for OWL-ViT and OWLv2), start/end included."""
        return int(self.model.config.text_config.max_position_embeddings)

    # ------------------------------------------------------------------ images
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> (B, 3, S, S) float ``pixel_values`` on the backbone's device.

        The checkpoint's own image processor does it (OWL-ViT: resize to S x S; OWLv2: pad
        bottom/right with black to a square, anti-aliased resize), so pixels match transformers'.
        """
        out = self.processor(images=[img.convert("RGB") for img in images], return_tensors="pt")
        return out["pixel_values"].to(device=self.device, dtype=self.dtype)

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
        model_boxes = box_cxcywh_to_xyxy(model.box_predictor(tokens, feature_map))  # (B, N, 4)
        boxes = model_boxes
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
        raw = head.dense0(tokens)
        class_embeds = raw / (raw.norm(dim=-1, keepdim=True) + 1e-6)
        shift = head.logit_shift(tokens)[..., 0]
        scale_ = (F.elu(head.logit_scale(tokens)) + 1)[..., 0]
        objectness = model.objectness_predictor(tokens) if hasattr(model, "objectness_predictor") else None
        return ImageFeatures(tokens, boxes, class_embeds, shift, scale_, raw, model_boxes, objectness)

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
        backbone fine-tuning (which trains through it). Texts longer than
        :attr:`max_text_tokens` are cut there, as transformers' processor cuts them
        (:meth:`is_truncated` tells)."""
        # pad to the longest text, not to 16: CLIP's text tower is causal and pools at the end
        # token, so padding after it cannot change the embedding, only cost time
        enc = self.tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        out = self.text_model.get_text_features(
            input_ids=enc["input_ids"].to(self.device), attention_mask=enc["attention_mask"].to(self.device)
        )
        return out.pooler_output if hasattr(out, "pooler_output") else out

    def is_truncated(self, text: str) -> bool:
        """True when ``text`` has more tokens than the text tower reads (the rest is not seen)."""
        return len(self.tokenizer(text, truncation=False)["input_ids"]) > self.max_text_tokens

    @torch.no_grad()
    def image_query(self, features: ImageFeatures) -> ImageQuery:
        """The query embedding for a query image, chosen as transformers' ``image_guided_detection``
        chooses it.

        OWL-ViT: among the tokens whose (unclamped) box overlaps the whole image at >= 80 % of the
        best IoU (generalised IoU when no box overlaps it at all), the one whose raw class
        embedding is *least* similar to the mean raw embedding: the most distinctive object, not
        the background. OWLv2: the token with the highest objectness.

        Args:
            features: :class:`ImageFeatures` of the query image (B = 1).
        """
        raw = features.raw_class_embeds[0].float()
        if features.objectness is not None:
            best = int(torch.argmax(features.objectness[0]))
        else:
            boxes = features.model_boxes[0].float()
            whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=boxes.device)
            ious = box_iou(whole, boxes)[0][0]
            if bool(torch.all(ious == 0.0)):
                ious = generalized_box_iou(whole, boxes)[0]
            selected = (ious >= ious.max() * 0.8).nonzero().flatten()
            mean = raw.mean(dim=0)
            best = int(selected[torch.argmin(raw[selected] @ mean)])
        return ImageQuery(raw[best].cpu(), best, features.boxes[0, best].float().cpu())

    def embed_image_query(self, features: ImageFeatures) -> torch.Tensor:
        """(Dq,) embedding of :meth:`image_query` (see there)."""
        return self.image_query(features).embedding


def _describe_processor(processor, config) -> Preprocessing:
    """Side and padding of a transformers OWL-ViT/OWLv2 image processor."""
    size = getattr(processor, "size", None) or {}
    if isinstance(size, dict) or hasattr(size, "get"):
        side = size.get("height") or size.get("shortest_edge")
    else:
        side = size
    return Preprocessing(
        size=int(side or config.vision_config.image_size),
        pad_to_square=config.model_type == "owlv2",
    )


def describe_load_failure(name: str, exc: BaseException) -> str:
    """A message that says what failed to load, why, and what to do next."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    looks_local = name.startswith((".", "/", "~")) or os.sep in name and not _looks_like_hub_id(name)
    if Path(name).expanduser().exists() or looks_local:
        return (
            folder_problem(name)
            or f"{name}: cannot load the model in this folder ({type(exc).__name__}: {exc})"
        )
    from . import hub_access

    text = f"{type(exc).__name__}: {exc}"
    if offline:
        return hub_access.offline_message(name)
    if hub_access.hub_was_unreachable() or _is_connection_error(exc):
        return hub_access.unreachable_message(name)
    return (
        f"cannot load {name!r}: it is not a model on the Hugging Face Hub or a local folder "
        f"({text.splitlines()[0][:300]}). "
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
