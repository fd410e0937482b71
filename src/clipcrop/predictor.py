"""The predictor every surface shares: Python API, CLI, HTTP service and batch jobs.

``ClipCrop`` owns the backbone, the optional trained decoder and the limits; nothing outside
this module pre- or post-processes. Set an image once (:meth:`ClipCrop.encode`), crop it for
many conditions (:meth:`EncodedImage.crop`): the vision tower runs once per image and text
embeddings are cached, so a new query costs a text-encoder pass and the decoder, a repeated
query only the decoder.

Boxes returned to users are ``(x0, y0, x1, y1)`` ints in pixels of the *upright original*
image (EXIF orientation applied), x1/y1 exclusive, so ``image.crop(box)`` gives the crop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .crop_options import CropOptions, Prior
from .errors import BackboneLoadError, ModelLoadError, ParameterError, QueryError
from .io.images import ImageSource, LoadedImage, load_image
from .limits import Limits
from .model_source import DEFAULT_NUM_CROPS, MODEL_TYPES, is_clipcrop_checkpoint, local_config, model_name
from .modeling.backbone import (
    Backbone,
    ImageFeatures,
    describe_load_failure,
)
from .modeling.composition import Candidates, fill_candidates, rank_candidates, salient_objects
from .modeling.detection import DetectionResult, rank_detections
from .modeling.model import (
    DEFAULT_SELECTION,
    INSIDE_BACKBONE,
    ClipCropModel,
    check_selection,
    resolve_backbone_ref,
)
from .modeling.priors import clear_of_avoided, clip_priors, keeps_all, prior_penalties
from .modeling.selection import (
    Selection,
    condition_texts,
    decoder_inputs,
    ensure_min_size,
    select_tokens,
    unconditioned,
)
from .ops.aspect import MIN_CROP_AREA, MIN_CROP_SIDE, enforce_min_size
from .ops.box_ops import box_cxcywh_to_xyxy, fit_aspect, fraction_inside_np, nms_np, parse_aspect, round_box
from .settings import PRECISIONS, QUANTIZATIONS, ModelSettings
from .validation import MAX_DETECTIONS, validate_query, validate_query_pair, validate_top_k

logger = logging.getLogger(__name__)

MODE_TRAINED = "trained"
MODE_TRAINING_FREE = "training-free"
#: prompts whose detections stand for "other objects" in training-free composition scoring
OBJECT_PROMPTS = ("a photo of an object", "a person", "an animal", "a face")
#: crops overlapping a better one above this IoU are dropped (distinct alternatives)
NMS_IOU = 0.7


@dataclass(frozen=True)
class Crop:
    """One ranked crop: ``box`` is (x0, y0, x1, y1) int pixels of the upright image; ``score`` in [0, 1].

    ``aspect``: the ratio this crop was made for (``"W:H"``, None for a free crop). ``focus``:
    the subject's centre (of ``b_u``; the image's centre without a condition) moved inside the
    crop, in pixels, for focal-point pipelines. ``output_size``: the (width, height) the crop is
    written at when an exact size was asked for.
    """

    box: tuple[int, int, int, int]
    score: float
    aspect: str | None = None
    focus: tuple[float, float] | None = None
    output_size: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        out = {"box": list(self.box), "score": round(float(self.score), 6), "aspect": self.aspect}
        out["focus"] = None if self.focus is None else [round(float(v), 1) for v in self.focus]
        if self.output_size is not None:
            out["output_size"] = list(self.output_size)
        return out


@dataclass
class CropResult(Sequence[Crop]):
    """Ranked crops for one image and condition (best first); indexable like a list.

    Attributes:
        crops: the crops, best first.
        width, height: size of the upright original image in pixels.
        query: the text query (normalised) or None.
        image_query: name of the query image, or None.
        mode: ``"trained"`` (decoder) or ``"training-free"`` (composition ranking).
        image: display name of the image.
        union_box: ``b_u`` in pixels (xyxy ints); the whole image when unconditioned.
        keywords: keywords that selected tokens (after filtering).
        truncated: the text query had more tokens than OWL-ViT reads (16): the full text was
            embedded cut there, while its keywords still carry the rest.
        subject: ``b_u`` in pixels (xyxy ints) when a condition selected it, None unconditioned.
        priors: the regions the ranking kept whole or left out (user boxes, faces, avoided texts).
        aspects: the ratio labels, in the order their groups appear in ``crops``.
        timings: seconds per stage that ran (decode, preprocess, backbone, keywords, text_encoder or
            query_image, select, decoder in trained mode or compose in training-free mode, postprocess).
    """

    crops: list[Crop]
    width: int
    height: int
    query: str | None
    image_query: str | None
    mode: str
    image: str
    union_box: tuple[int, int, int, int]
    keywords: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    truncated: bool = False
    subject: tuple[int, int, int, int] | None = None
    priors: list[Prior] = field(default_factory=list)
    aspects: list[str | None] = field(default_factory=lambda: [None])

    def __getitem__(self, index):  # type: ignore[override]
        return self.crops[index]

    def for_aspect(self, aspect: str | None) -> list[Crop]:
        """The crops made for one ratio (``"4:5"``; None for free crops), best first."""
        ratio = parse_aspect(aspect)
        return [c for c in self.crops if parse_aspect(c.aspect) == ratio]

    def __len__(self) -> int:
        return len(self.crops)

    def __iter__(self) -> Iterator[Crop]:
        return iter(self.crops)

    def to_dict(self, *, extended: bool = False) -> dict:
        """The CLI's JSON object; ``extended`` adds ``mode``, ``union_box``, ``keywords`` and ``timings``."""
        out = {
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "query": self.query,
            "crops": [c.to_dict() for c in self.crops],
            "error": None,
        }
        if self.image_query is not None:
            out["image_query"] = self.image_query
        if self.query is not None:
            out["truncated"] = self.truncated
        out["subject"] = None if self.subject is None else list(self.subject)
        out["priors"] = [p.to_dict() for p in self.priors]
        if extended:
            out.update(
                mode=self.mode,
                union_box=list(self.union_box),
                keywords=list(self.keywords),
                timings={k: round(v, 6) for k, v in self.timings.items()},
            )
        return out


@dataclass
class Condition:
    """A prepared condition: embeddings (W, Dq) with their labels; W = 0 means unconditioned.

    ``truncated``: the full text was longer than the text tower reads. ``query_token``: for an
    image query, the query image's token whose embedding is used (OWL-ViT's rule).
    """

    kind: str  # "text" | "image" | "none"
    embeds: torch.Tensor
    labels: list[str]
    query: str | None = None
    image_query: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    truncated: bool = False
    query_token: int | None = None


class EncodedImage:
    """An image after the backbone ran on it; crop it for any number of conditions."""

    def __init__(
        self, predictor: ClipCrop, loaded: LoadedImage, features: ImageFeatures, timings: dict[str, float]
    ) -> None:
        self.predictor = predictor
        self.loaded = loaded
        self.features = features
        self.timings = dict(timings)
        #: per-image values derived lazily and reused across queries (decoder keys/values)
        self.cache: dict[str, object] = {}

    @property
    def width(self) -> int:
        return self.loaded.width

    @property
    def height(self) -> int:
        return self.loaded.height

    def crop(
        self,
        query: str | None = None,
        *,
        image_query: ImageSource | None = None,
        top_k: int = 5,
        aspect_ratio: object = None,
        **options,
    ) -> CropResult:
        """Crops for a text query, an image query, or neither (see :meth:`ClipCrop.crop`)."""
        opts = CropOptions.build(top_k=top_k, aspect_ratio=aspect_ratio, **options)
        condition = self.predictor.prepare_condition(query, image_query)
        return self.predictor.crop_encoded(self, condition, options=opts)

    def detect(
        self, query: str | None = None, *, image_query: ImageSource | None = None, top_k: int = 5
    ) -> DetectionResult:
        """OWL-ViT's detections for a text or image query (see :meth:`ClipCrop.detect`)."""
        condition = self.predictor.prepare_condition(query, image_query, whole_text=True)
        return self.predictor.detect_encoded(self, condition, top_k=top_k)


class ClipCrop:
    """Conditioned smart cropping. Build with :meth:`from_pretrained`.

    Args:
        backbone: the OWL-ViT/OWLv2 :class:`~clipcrop.modeling.backbone.Backbone`.
        model: a trained :class:`~clipcrop.modeling.model.ClipCropModel`, or None for training-free mode.
        limits: input limits shared by every surface.
        nms_iou: crops overlapping a better one above this IoU are dropped, so the top-k are
            distinct alternatives (1.0 switches suppression off).
        selection: overrides of the selection settings (keys of
            :data:`clipcrop.modeling.model.DEFAULT_SELECTION`: ``min_score``, ``prompt_template``,
            ``object_threshold``, ...); a trained checkpoint's own settings are the base.
        min_crop_area, min_crop_side: the smallest crop returned, as a share of the image's area
            and in pixels per side (both modes; capped by the image): a sliver is never a crop.
    """

    def __init__(
        self,
        backbone: Backbone,
        model: ClipCropModel | None = None,
        *,
        limits: Limits | None = None,
        nms_iou: float = NMS_IOU,
        name: str | None = None,
        selection: dict | None = None,
        min_crop_area: float = MIN_CROP_AREA,
        min_crop_side: int = MIN_CROP_SIDE,
    ) -> None:
        self.backbone = backbone
        self.model = model.eval() if model is not None else None
        self.limits = limits or Limits()
        self.nms_iou = nms_iou
        self.name = name or backbone.name
        if self.model is not None:
            self.model.to(backbone.device)
        base = self.model.selection if self.model is not None else DEFAULT_SELECTION
        self.selection_settings = {**DEFAULT_SELECTION, **base, **check_selection(selection)}
        if not 0.0 <= float(min_crop_area) <= 1.0 or int(min_crop_side) < 1:
            raise ParameterError("min_crop_area must be in [0, 1] and min_crop_side at least 1 pixel")
        self.min_crop_area = float(min_crop_area)
        self.min_crop_side = int(min_crop_side)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        name_or_dir: str | os.PathLike | None = None,
        *,
        device: str = ModelSettings.device,
        limits: Limits | None = None,
        precision: str = ModelSettings.precision,
        quantize: str | None = None,
        local_files_only: bool | None = None,
        nms_iou: float = NMS_IOU,
        backbone: str | os.PathLike | None = None,
        selection: dict | None = None,
        min_crop_area: float = MIN_CROP_AREA,
        min_crop_side: int = MIN_CROP_SIDE,
    ) -> ClipCrop:
        """Load plain OWL-ViT/OWLv2 weights (training-free mode) or a trained ClipCrop checkpoint.

        Args:
            name_or_dir: Hub id or local folder; default ``$CLIPCROP_MODEL`` or ``google/owlvit-base-patch32``.
            device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
            precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (half precisions on GPU).
            quantize: ``"int8"`` for CPU dynamic quantisation of the vision tower's MLPs
                (:mod:`clipcrop.modeling.quantization` says why only those).
            backbone: for a trained checkpoint, load this OWL-ViT folder or Hub id instead of the
                one the checkpoint names (for example after moving it).
            limits, local_files_only: see :class:`~clipcrop.settings.ModelSettings`.
            nms_iou, selection, min_crop_area, min_crop_side: see :class:`ClipCrop`.

        Raises:
            ModelLoadError: cannot be loaded (message says why: missing folder, offline, not found...);
                :class:`~clipcrop.errors.BackboneLoadError` when only a checkpoint's backbone is missing.
            ParameterError: an unknown precision or quantisation, or int8 with a half precision or a GPU.
        """
        settings = ModelSettings(
            model=str(name_or_dir) if name_or_dir else None,
            backbone=str(backbone) if backbone is not None else None,
            device=device,
            precision=precision,
            quantize=quantize,
            limits=limits or Limits(),
            local_files_only=local_files_only,
        )
        return cls.from_settings(
            settings,
            nms_iou=nms_iou,
            selection=selection,
            min_crop_area=min_crop_area,
            min_crop_side=min_crop_side,
        )

    @classmethod
    def from_settings(
        cls,
        settings: ModelSettings,
        *,
        nms_iou: float = NMS_IOU,
        selection: dict | None = None,
        min_crop_area: float = MIN_CROP_AREA,
        min_crop_side: int = MIN_CROP_SIDE,
    ) -> ClipCrop:
        """Load the predictor :class:`~clipcrop.settings.ModelSettings` describe (what every surface
        converts its flags or environment into); the other arguments as :class:`ClipCrop`'s.

        Raises:
            ModelLoadError, ParameterError: as :meth:`from_pretrained`.
        """
        from .modeling.hub_access import stay_local

        name = model_name(settings.model)
        device, dtype = _device_and_dtype(settings)
        local_files_only = stay_local(name, settings.local_files_only)  # Hub unreachable: the cache, at once
        model = _load_checkpoint(name, settings.backbone, local_files_only)
        if model is None:
            backbone_name = name
        elif settings.backbone is not None:
            backbone_name = settings.backbone
        else:
            backbone_name = _checkpoint_backbone(name, model)
        try:
            backbone = Backbone.from_pretrained(
                backbone_name, device=device, local_files_only=local_files_only
            )
        except ModelLoadError as exc:
            if model is None:
                raise
            raise BackboneLoadError(name, backbone_name, str(exc)) from exc
        if dtype != torch.float32:
            backbone.model.to(dtype)
        if settings.quantize == "int8":
            from .modeling.quantization import quantize_int8

            backbone.model = quantize_int8(backbone.model)
        predictor = cls(
            backbone,
            model,
            limits=settings.limits,
            nms_iou=nms_iou,
            name=name,
            selection=selection,
            min_crop_area=min_crop_area,
            min_crop_side=min_crop_side,
        )
        logger.info(
            "loaded %s (%s mode, backbone %s, device %s)", name, predictor.mode, backbone_name, device
        )
        return predictor

    @property
    def mode(self) -> str:
        return MODE_TRAINED if self.model is not None else MODE_TRAINING_FREE

    @property
    def max_top_k(self) -> int:
        num = self.model.decoder_config.num_queries if self.model is not None else DEFAULT_NUM_CROPS
        return min(num, self.limits.max_top_k or num)

    # ------------------------------------------------------------------ public API
    def crop(
        self,
        image: ImageSource,
        query: str | None = None,
        *,
        image_query: ImageSource | None = None,
        top_k: int = 5,
        aspect_ratio: object = None,
        **options,
    ) -> CropResult:
        """Ranked crops of ``image``.

        Args:
            image: path, bytes, file object, PIL image or array.
            query: what the crop should show, in words; or None.
            image_query: a reference image of what the crop should show (one-shot); or None.
            top_k: number of crops to return (1..M), per aspect ratio.
            aspect_ratio: ``"W:H"``, a float or ``(w, h)``: every crop gets exactly that ratio (±1 px);
                several (``["1:1", "4:5"]`` or ``"1:1,4:5"``): ``top_k`` crops per ratio, grouped in
                that order, the image encoded once (:meth:`CropResult.for_aspect`).
            **options: the rest of :meth:`clipcrop.crop_options.CropOptions.build`: ``size``
                ((w, h) or ``"1080x1350"``: each crop's ``output_size``; the ratio follows from it),
                ``upscale``, ``keep`` / ``avoid_box`` (pixel boxes ``"x0,y0,x1,y1[,weight]"`` or
                :class:`~clipcrop.crop_options.Prior`), ``avoid`` (texts whose detections to leave
                out), ``faces`` (keep faces whole; needs ``clipcrop[faces]``).

        Raises:
            ImageError subclasses, QueryError, ParameterError (see :mod:`clipcrop.errors`).
        """
        opts = CropOptions.build(top_k=top_k, aspect_ratio=aspect_ratio, **options)
        condition = self.prepare_condition(query, image_query)  # validate before the expensive part
        validate_top_k(opts.top_k, self.max_top_k)
        return self.crop_encoded(self.encode(image), condition, options=opts)

    def encode(self, image: ImageSource | LoadedImage, *, name: str | None = None) -> EncodedImage:
        """Decode and run the backbone once; crop the result for many queries."""
        return self.encode_batch([image], names=[name] if name else None)[0]

    def encode_batch(
        self, images: Sequence[ImageSource | LoadedImage], names: Sequence[str] | None = None
    ) -> list[EncodedImage]:
        """Encode several images in one backbone call (they must all be readable)."""
        t0 = time.perf_counter()
        loaded = [
            img
            if isinstance(img, LoadedImage)
            else load_image(img, self.limits, name=names[i] if names else None)
            for i, img in enumerate(images)
        ]
        t1 = time.perf_counter()
        pixel_values = self.backbone.preprocess([li.image for li in loaded])
        t2 = time.perf_counter()
        features = self.backbone.encode(pixel_values, [(li.image.width, li.image.height) for li in loaded])
        t3 = time.perf_counter()
        n = len(loaded)
        timings = {"decode": (t1 - t0) / n, "preprocess": (t2 - t1) / n, "backbone": (t3 - t2) / n}
        return [EncodedImage(self, li, features[i], timings) for i, li in enumerate(loaded)]

    def prepare_condition(
        self,
        query: str | None = None,
        image_query: ImageSource | None = None,
        *,
        whole_text: bool = False,
    ) -> Condition:
        """Validate and embed a condition (text embeddings are cached inside the backbone).

        Args:
            whole_text: embed the text as one query, without keywords (detections use it so).
        """
        validate_query_pair(query, image_query)
        if image_query is not None:
            t0 = time.perf_counter()
            enc = self.encode(image_query)
            chosen = self.backbone.image_query(enc.features)
            return Condition(
                "image",
                chosen.embedding[None],
                ["image query"],
                image_query=enc.loaded.name,
                timings={"query_image": time.perf_counter() - t0},
                query_token=chosen.token,
            )
        text = validate_query(query, self.limits)
        use_text = whole_text or self.selection_settings.get("use_text", True)
        if text is None or not use_text:
            # the "base" variant is trained without text: it crops un-conditioned whatever is asked
            return Condition("none", torch.zeros(0, 1), [], query=text)
        t0 = time.perf_counter()
        if whole_text:
            texts, labels = [text], ["full text"]
        else:
            texts, labels = condition_texts(text, self.selection_settings)
        t1 = time.perf_counter()
        embeds = self.backbone.embed_texts(texts)
        t2 = time.perf_counter()
        return Condition(
            "text",
            embeds,
            labels,
            query=text,
            timings={"keywords": t1 - t0, "text_encoder": t2 - t1},
            truncated=self.backbone.is_truncated(text),
        )

    def detect(
        self,
        image: ImageSource,
        query: str | None = None,
        *,
        image_query: ImageSource | None = None,
        top_k: int = 5,
    ) -> DetectionResult:
        """OWL-ViT's own detections for a text or an image query, best first.

        The raw view the crops are built on: each of the ``top_k`` image tokens with the highest
        logit, its box in float pixels of the upright image (clamped to it), ``score`` (the
        OWL-ViT probability), ``logit`` and ``token``. The text is used whole (no keywords), as
        transformers' ``post_process_grounded_object_detection`` ranks it; an image query picks
        its embedding as ``image_guided_detection`` does.

        Raises:
            QueryError: neither or both queries; ImageError, ParameterError as :meth:`crop`.
        """
        if query is None and image_query is None:
            raise QueryError("detect needs a text query or an image query")
        condition = self.prepare_condition(query, image_query, whole_text=True)
        validate_top_k(top_k, MAX_DETECTIONS)
        return self.detect_encoded(self.encode(image), condition, top_k=top_k)

    def detect_encoded(
        self, encoded: EncodedImage, condition: Condition, *, top_k: int = 5
    ) -> DetectionResult:
        """Detections of an already encoded image for a prepared (whole-text or image) condition."""
        if condition.kind == "none":
            raise QueryError("detect needs a text query or an image query")
        top_k = validate_top_k(top_k, MAX_DETECTIONS)
        detections = rank_detections(
            encoded.features, condition.embeds[0], encoded.width, encoded.height, top_k
        )
        return DetectionResult(
            detections=detections,
            width=encoded.width,
            height=encoded.height,
            query=condition.query,
            image_query=condition.image_query,
            image=encoded.loaded.name,
            truncated=condition.truncated,
            query_token=condition.query_token,
            timings={**encoded.timings, **condition.timings},
        )

    def crop_encoded(
        self,
        encoded: EncodedImage,
        condition: Condition,
        *,
        top_k: int = 5,
        aspect_ratio: object = None,
        condition_token: bool = True,
        options: CropOptions | None = None,
    ) -> CropResult:
        """Crops of an already encoded image for a prepared condition.

        ``options`` (a :class:`~clipcrop.crop_options.CropOptions`) replaces ``top_k`` and
        ``aspect_ratio`` when given. The backbone does not run again, whatever the number of
        ratios: the trained decoder runs once, training-free candidates are built per ratio.
        ``condition_token=False`` is an ablation (trained mode): the decoder gets its learned
        "no condition" vector instead of the condition's token, ``b_u`` kept, to measure what
        the decoder takes from the condition beyond the union box.
        """
        opts = options or CropOptions.build(top_k=top_k, aspect_ratio=aspect_ratio)
        top_k = validate_top_k(opts.top_k, self.max_top_k)
        timings = {**encoded.timings, **condition.timings}
        t0 = time.perf_counter()
        selection = self._select(encoded.features, condition)
        t1 = time.perf_counter()
        priors = self.gather_priors(encoded, opts)
        t2 = time.perf_counter()
        width, height = encoded.width, encoded.height
        subject = selection.union.detach().float().cpu().numpy().astype(np.float64)
        decoded = None
        if self.model is not None:
            blind = dataclasses.replace(selection, mean_token=None)
            decoded = self._decode(encoded, selection if condition_token else blind)
        crops: list[Crop] = []
        post = 0.0
        for label, ratio in opts.aspects:
            cands = (
                decoded
                if decoded is not None
                else self._compose(encoded.features, selection, width, height, ratio)
            )
            t3 = time.perf_counter()
            group = self.postprocess(
                cands.boxes,
                cands.scores,
                width,
                height,
                top_k=top_k,
                ratio=ratio,
                subject=subject,
                priors=priors,
            )
            crops += [self._finish_crop(c, label, subject, width, height, opts) for c in group]
            post += time.perf_counter() - t3
        # the stage that ran: the trained decoder, or the composition ranking of training-free mode
        stage = "decoder" if self.model is not None else "compose"
        timings.update({"select": t1 - t0, stage: time.perf_counter() - t2 - post, "postprocess": post})
        if priors:
            timings["priors"] = t2 - t1
        union_px = round_box(subject * [width, height, width, height], width, height)
        return CropResult(
            crops=crops,
            width=width,
            height=height,
            query=condition.query,
            image_query=condition.image_query,
            mode=self.mode,
            image=encoded.loaded.name,
            union_box=union_px,
            keywords=[lab for lab in selection.labels if lab not in ("full text", "image query")],
            timings=timings,
            truncated=condition.truncated,
            subject=union_px if selection.conditioned else None,
            priors=list(priors),
            aspects=[label for label, _ in opts.aspects],
        )

    def _select(self, feats: ImageFeatures, condition: Condition) -> Selection:
        """The condition's token selection and ``b_u`` (the whole image without a condition)."""
        if condition.kind == "none":
            return unconditioned(feats)
        return select_tokens(
            feats, condition.embeds, condition.labels, min_score=float(self.selection_settings["min_score"])
        )

    def gather_priors(self, encoded: EncodedImage, options: CropOptions) -> list[Prior]:
        """The priors of a request on one image, clipped to it: the user's boxes, the faces the
        Haar cascade finds (``faces``) and, per ``avoid`` text, OWL-ViT's detections of it on the
        same encoded image (tokens at ``object_threshold`` or more, de-duplicated; the best token
        when none reaches it but it reaches ``min_score``)."""
        width, height = encoded.width, encoded.height
        priors = list(options.priors)
        if options.faces:
            from .modeling.faces import detect_faces

            img = encoded.loaded.image
            sx, sy = width / img.width, height / img.height  # the image may be decoded reduced
            for x0, y0, x1, y1 in detect_faces(img):
                priors.append(Prior((x0 * sx, y0 * sy, x1 * sx, y1 * sy), "face", 1.0, "faces"))
        for text in options.avoid_text:
            priors += self._text_regions(encoded, text)
        return clip_priors(priors, width, height)

    def _text_regions(self, encoded: EncodedImage, text: str) -> list[Prior]:
        """What OWL-ViT finds for ``text`` on the encoded image, as avoid priors (pixels)."""
        feats, settings = encoded.features, self.selection_settings
        probs = torch.sigmoid(feats.logits(self.backbone.embed_texts([text]))[0, :, 0]).float().cpu().numpy()
        boxes = feats.boxes[0].float().cpu().numpy().astype(np.float64)
        found = salient_objects(boxes, probs, threshold=float(settings["object_threshold"]), max_objects=3)
        if not len(found) and probs.max() >= float(settings["min_score"]):
            found = boxes[[int(np.argmax(probs))]]
        scale = np.array([encoded.width, encoded.height] * 2, dtype=np.float64)
        return [Prior(tuple(float(v) for v in b * scale), "avoid", 1.0, f"text: {text}") for b in found]

    @staticmethod
    def _finish_crop(
        crop: Crop, label: str | None, subject: np.ndarray, width: int, height: int, options: CropOptions
    ) -> Crop:
        """A ranked crop with its ratio label, focal point and output size."""
        cx, cy = (subject[0] + subject[2]) / 2 * width, (subject[1] + subject[3]) / 2 * height
        x0, y0, x1, y1 = crop.box
        focus = (min(max(cx, x0), x1), min(max(cy, y0), y1))
        return dataclasses.replace(crop, aspect=label, focus=focus, output_size=options.output_size(crop.box))

    # ------------------------------------------------------------------ internals
    @torch.no_grad()
    def _decode(self, encoded: EncodedImage, selection: Selection) -> Candidates:
        """Trained mode: the decoder's M crops (normalised xyxy) and sigmoid scores.

        The decoder's image-side keys/values are computed once per encoded image and kept on it.
        """
        model = self.model
        assert model is not None
        feats = encoded.features
        memory = encoded.cache.get("decoder_memory")
        if memory is None:
            memory = encoded.cache["decoder_memory"] = model.decoder.memory(feats.tokens, feats.boxes)
        inputs = decoder_inputs([selection], feats.tokens, feats.boxes)
        out = model(
            feats.tokens, feats.boxes, inputs.condition, inputs.has_condition, inputs.union, memory=memory
        )
        boxes = ensure_min_size(box_cxcywh_to_xyxy(out["pred_boxes"][0].float())).cpu().numpy()
        scores = torch.sigmoid(out["pred_logits"][0].float()).cpu().numpy()
        return Candidates(boxes.astype(np.float64), scores.astype(np.float64))

    def _compose(
        self, feats: ImageFeatures, selection: Selection, width: int, height: int, ratio: float | None
    ) -> Candidates:
        """Training-free mode: candidates around ``b_u`` scored by :mod:`clipcrop.modeling.composition`."""
        probs = torch.sigmoid(
            feats.logits(self.backbone.embed_texts(list(OBJECT_PROMPTS)))[0].max(dim=-1).values
        )
        token_boxes = feats.boxes[0].float().cpu().numpy().astype(np.float64)
        objects = salient_objects(
            token_boxes,
            probs.float().cpu().numpy(),
            threshold=float(self.selection_settings["object_threshold"]),
        )
        if selection.conditioned:
            subject = selection.union.float().cpu().numpy().astype(np.float64)
        elif len(objects):
            # no condition: the most confident objects stand in for the subject
            top = objects[:3]
            subject = np.concatenate([top[:, :2].min(0), top[:, 2:].max(0)])
        else:
            subject = np.array([0.2, 0.2, 0.8, 0.8])
        if len(objects):  # objects that are part of the subject are not "others"
            inside = fraction_inside_np(objects, subject) > 0.9
            objects = objects[~inside]
        return rank_candidates(subject, objects, width, height, ratio)

    def postprocess(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        width: int,
        height: int,
        *,
        top_k: int,
        ratio: float | None,
        subject: np.ndarray | None = None,
        priors: Sequence[Prior] = (),
    ) -> list[Crop]:
        """Normalised xyxy boxes + scores -> ranked, distinct pixel crops.

        Order matters: to pixels, fit the aspect ratio, grow to the minimum crop size (so ranking
        sees the final crops), suppress near-duplicates, keep ``top_k``, round to ints (keeping
        the ratio within 1 px). When the candidates hold fewer than ``top_k`` distinct crops,
        :func:`clipcrop.modeling.composition.fill_candidates` around ``subject`` (normalised xyxy; the whole
        image when None) fills up, ranked after every candidate: fewer than ``top_k`` come back
        only when the image cannot hold more distinct crops.

        ``priors`` (pixel boxes) re-rank every candidate by
        :func:`clipcrop.modeling.priors.prior_penalties` (score minus penalty, so a crop that cuts
        a kept region ranks below every crop that holds it); with kept regions, crops around the
        subject and all of them (and around them alone) join the candidates, so that holding them
        is possible; when any crop holds them all, crops that cut one are dropped (faces and kept
        regions are never cut). With avoided regions, crops spread over the image join too, and
        crops clear of every avoided region (:func:`~clipcrop.modeling.priors.clear_of_avoided`)
        rank above those that are not, when there are any.
        """
        subject = subject if subject is not None else np.array([0.0, 0.0, 1.0, 1.0])
        boxes, scores = self._with_keep_candidates(boxes, scores, subject, priors, width, height, ratio)
        px = self._final_boxes(boxes, width, height, ratio)
        # kept regions are never cut when some crop can hold them all: the others are dropped
        strict = bool(keeps_all(px, priors).any()) and any(p.keeps for p in priors)
        held = keeps_all(px, priors) if strict else np.ones(len(px), dtype=bool)
        ranked = scores - prior_penalties(px, priors)
        clear = clear_of_avoided(px, priors)
        if clear[held].any():  # avoided regions: every crop clear of them ranks above the others
            ranked = ranked - 2.0 * ~clear
        crops = self._distinct(px[held], ranked[held], width, height, top_k, ratio)
        if len(crops) < top_k:
            fill = fill_candidates(subject, width, height, ratio)
            floor = min([c.score for c in crops], default=1.0)
            fill_px = self._final_boxes(fill.boxes, width, height, ratio)
            fill_scores = fill.scores * floor * 0.99 - prior_penalties(fill_px, priors)
            if strict:
                whole = keeps_all(fill_px, priors)
                fill_px, fill_scores = fill_px[whole], fill_scores[whole]
            fill_scores = fill_scores - 2.0 * ~clear_of_avoided(fill_px, priors)
            taken = {c.box for c in crops}
            extra = self._distinct(fill_px, fill_scores, width, height, top_k, ratio, taken)
            crops += extra[: top_k - len(crops)]
        crops.sort(key=lambda c: -c.score)
        return crops

    @staticmethod
    def _with_keep_candidates(
        boxes: np.ndarray,
        scores: np.ndarray,
        subject: np.ndarray,
        priors: Sequence[Prior],
        width: int,
        height: int,
        ratio: float | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates (normalised xyxy, scores) plus, when there are kept regions, composition's
        crops around the subject and every kept region (scored below every candidate): crops that
        hold them all exist, whatever the decoder or the subject's candidates offered."""
        boxes, scores = (
            np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            np.asarray(scores, dtype=np.float64),
        )
        keeps = [p.box for p in priors if p.keeps]
        floor = float(scores.min()) if len(scores) else 1.0
        if any(not p.keeps for p in priors):  # crops all over the image: some clear of what to avoid
            fill = fill_candidates(subject, width, height, ratio)
            boxes = np.vstack([boxes, fill.boxes])
            scores = np.concatenate([scores, fill.scores * floor * 0.99])
        if not keeps:
            return boxes, scores
        scale = np.array([width, height, width, height], dtype=np.float64)
        # around the subject with every kept region, and around the kept regions alone (for when
        # the first does not fit the ratio)
        for group in (np.vstack([subject[None] * scale, np.array(keeps)]), np.array(keeps)):
            union = np.concatenate([group[:, :2].min(0), group[:, 2:].max(0)]) / scale
            extra = rank_candidates(union, np.zeros((0, 4)), width, height, ratio)
            boxes, scores = (
                np.vstack([boxes, extra.boxes]),
                np.concatenate([scores, extra.scores * floor * 0.99]),
            )
            floor *= 0.99
        return boxes, scores

    def _final_boxes(self, boxes: np.ndarray, width: int, height: int, ratio: float | None) -> np.ndarray:
        """(C, 4) normalised xyxy -> pixel boxes in the ratio and at least the minimum size."""
        px = boxes.reshape(-1, 4) * np.array([width, height, width, height], dtype=np.float64)
        px[:, [0, 2]] = px[:, [0, 2]].clip(0, width)
        px[:, [1, 3]] = px[:, [1, 3]].clip(0, height)
        out = []
        for b in px:
            if ratio is not None:
                b = fit_aspect(b, ratio, width, height)
            out.append(
                enforce_min_size(
                    b, width, height, min_area=self.min_crop_area, min_side=self.min_crop_side, ratio=ratio
                )
            )
        return np.stack(out) if out else px

    def _distinct(
        self,
        px: np.ndarray,
        scores: np.ndarray,
        width: int,
        height: int,
        top_k: int,
        ratio: float | None,
        taken: set[tuple[int, int, int, int]] | None = None,
    ) -> list[Crop]:
        """Up to ``top_k`` crops, distinct alternatives first: non-suppressed boxes by score, then
        the best suppressed ones (still distinct once rounded, and not in ``taken``)."""
        kept = nms_np(px, scores, self.nms_iou)
        kept_set = set(kept.tolist())
        order = list(kept) + [int(i) for i in np.argsort(-scores, kind="stable") if i not in kept_set]
        crops: list[Crop] = []
        seen = set(taken or ())
        for i in order:
            if len(crops) >= top_k:
                break
            box = round_box(px[i], width, height, ratio)
            if box in seen:
                continue
            seen.add(box)
            crops.append(Crop(box=box, score=float(np.clip(scores[i], 0.0, 1.0))))
        return crops


def _device_and_dtype(settings: ModelSettings) -> tuple[str, torch.dtype]:
    """The device (``auto`` resolved) and backbone dtype ``settings`` ask for, checked together.

    Raises:
        ParameterError: an unknown precision or quantisation; int8 with a half precision (dynamic
            int8 replaces fp32 Linear layers; it has no half-precision form) or off the CPU.
    """
    device, precision, quantize = settings.device, settings.precision, settings.quantize
    if device == "auto":  # a GPU when there is one; int8 is a CPU path, so auto means the CPU there
        device = "cuda" if torch.cuda.is_available() and quantize is None else "cpu"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        raise ParameterError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ParameterError(f"quantize {quantize!r} is not supported (use {', '.join(QUANTIZATIONS)})")
    if quantize == "int8" and dtype != torch.float32:
        raise ParameterError(f"quantize int8 cannot be combined with precision {precision}; use fp32")
    if quantize == "int8" and not device.startswith("cpu"):
        raise ParameterError(f"quantize int8 runs on CPU only, not on device {device!r}")
    return device, dtype


def _load_checkpoint(name: str, backbone: str | None, local_files_only: bool | None) -> ClipCropModel | None:
    """The trained decoder when ``name`` is a ClipCrop checkpoint; None for plain OWL-ViT/OWLv2
    weights (training-free mode), told apart by :func:`clipcrop.model_source.is_clipcrop_checkpoint`.

    Raises:
        ModelLoadError: neither kind, or the checkpoint's weights cannot be read.
        ParameterError: ``backbone`` given for OWL-ViT weights (it is for trained checkpoints).
    """
    config = _read_config(name, local_files_only)
    if not is_clipcrop_checkpoint(config):
        if config.get("model_type") not in MODEL_TYPES:
            raise ModelLoadError(
                f"{name!r} is neither an OWL-ViT/OWLv2 checkpoint nor a ClipCrop checkpoint "
                f"(config.json has model_type={config.get('model_type')!r})"
            )
        if backbone is not None:
            raise ParameterError(f"{name!r} is an OWL-ViT model itself; backbone= is for trained checkpoints")
        return None
    try:
        # huggingface_hub's mixin print()s while loading local weights: keep stdout clean for
        # consumers of JSON lines
        with contextlib.redirect_stdout(io.StringIO()):
            return ClipCropModel.from_pretrained(name, local_files_only=bool(local_files_only))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(describe_load_failure(name, exc)) from exc


def _checkpoint_backbone(name: str, model: ClipCropModel) -> str:
    """The backbone a trained checkpoint uses: its own ``backbone/`` folder when it has one,
    otherwise what its config names (a relative path is relative to the checkpoint)."""
    checkpoint = Path(name).expanduser()
    if not checkpoint.is_dir():
        return model.backbone_name
    if (checkpoint / INSIDE_BACKBONE).is_dir():
        return str(checkpoint / INSIDE_BACKBONE)
    return resolve_backbone_ref(model.backbone_name, checkpoint)


def _read_config(name: str, local_files_only: bool | None) -> dict:
    """``config.json`` of a local folder (checked as the CLI checks it before loading,
    :func:`clipcrop.model_source.local_config`) or of a Hub repo (decides the mode)."""
    if Path(name).expanduser().exists():
        return local_config(name)
    try:
        from huggingface_hub import hf_hub_download

        kwargs = {} if local_files_only is None else {"local_files_only": local_files_only}
        cfg_file = hf_hub_download(name, "config.json", **kwargs)
        return json.loads(Path(cfg_file).read_text())
    except Exception as exc:  # noqa: BLE001 - hub errors, validation errors, JSON errors
        raise ModelLoadError(describe_load_failure(name, exc)) from exc
