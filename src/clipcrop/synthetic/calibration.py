"""Calibrate a randomly initialised OWL-ViT / OWLv2 so its outputs look like a pretrained model's.

A freshly initialised detection head is degenerate: its box logits are so large that almost
every token box collapses to zero width or height, and its class logits reach the hundreds, so
every probability saturates at 0 or 1 and one token wins for every query. Tests of geometry,
selection and ranking prove little on such a model. This module rescales the *heads only* (the
towers keep their random weights) from statistics measured on a few real photos and texts, so
that, as with real OWL-ViT:

* token boxes are varied and non-degenerate: the centre moves a little around the token's grid
  cell, the size is spread over a broad range (``large_boxes`` makes them mostly large, which is
  where OWL-ViT's image-query rule matters);
* the query-dependent cosine term, not the per-token logit shift, decides the ranking: the text
  projection loses the direction every text shares, the class embeddings are centred, and the
  per-token shift and scale vary only a little;
* for a query most tokens score under 0.05 and a handful over 0.1 (the shift and scale are
  solved from two quantiles of the measured cosines);
* ``varied_norms`` spreads the class-embedding norms from token to token (OWL-ViT's image-query
  rule reads raw, un-normalised embeddings, so rules that normalise pick other tokens).

Nothing here is learned: it is arithmetic on measured means, deviations and quantiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

#: texts whose embeddings set the text statistics: objects, scenes and sentences of the kinds
#: users send, bare and in OWL-ViT's prompt template
CALIBRATION_TEXTS = (
    "a person",
    "a human face",
    "a dog",
    "a cat on a blanket",
    "a photo of a helmet",
    "a photo of a flag",
    "a red car parked in the street",
    "a cup of coffee",
    "the rocket engine exhaust plume at night",
    "a woman and three dogs on the boat",
    "a photo of a tree",
    "two people shaking hands",
    "a bowl of fruit on a table",
    "a photo of a bicycle",
    "the moon over the sea",
    "a photo of a building",
)
#: quantiles of the cosines and the probabilities they map to: 90 % of (token, query) pairs score
#: under 0.04, the top 3 % over 0.15, as a pretrained OWL-ViT does on a photo
LOW_QUANTILE, LOW_PROB = 0.90, 0.04
HIGH_QUANTILE, HIGH_PROB = 0.97, 0.15


@dataclass(frozen=True)
class BoxShape:
    """Target spread of the box head's outputs, in logit units.

    ``size_median``: median box side as a fraction of the model's input; ``size_spread``: std of
    the side's logit; ``centre_spread``: std of the centre's logit offset from its grid cell.
    """

    size_median: float = 0.28
    size_spread: float = 0.6
    centre_spread: float = 0.3


STANDARD_BOXES = BoxShape()
LARGE_BOXES = BoxShape(size_median=0.7, size_spread=0.8, centre_spread=0.25)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _tokens(model, processor, images: Sequence[Image.Image]) -> torch.Tensor:
    """(P * N, D) image tokens of the calibration photos."""
    pixel_values = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
    feature_map = model.image_embedder(pixel_values=pixel_values)[0]
    return feature_map.reshape(-1, feature_map.shape[-1])


def _standardise_linear(
    layer: torch.nn.Linear, inputs: torch.Tensor, std: torch.Tensor, mean: torch.Tensor, generator
) -> None:
    """Set ``layer`` (D -> K) so that on ``inputs`` (T, D) its K outputs have these means and
    standard deviations, each a random direction of the inputs' standardised variation."""
    mu, sd = inputs.mean(0), inputs.std(0) + 1e-6
    directions = torch.randn(layer.out_features, layer.in_features, generator=generator)
    out = ((inputs - mu) / sd) @ directions.T
    directions = directions / (out.std(0)[:, None] + 1e-6) * std[:, None]
    weight = directions / sd[None, :]
    layer.weight.copy_(weight)
    layer.bias.copy_(mean - weight @ mu)


def _calibrate_boxes(model, tokens: torch.Tensor, shape: BoxShape, generator) -> None:
    """Box head: offsets to the grid prior so centres wander a little and sizes spread widely."""
    head = model.box_head
    hidden = F.gelu(head.dense1(F.gelu(head.dense0(tokens))))
    size_bias = float(model.box_bias[:, 2:].mean())  # the prior: one grid cell
    size_offset = _logit(shape.size_median) - size_bias
    std = torch.tensor([shape.centre_spread] * 2 + [shape.size_spread] * 2)
    mean = torch.tensor([0.0, 0.0, size_offset, size_offset])
    _standardise_linear(head.dense2, hidden, std, mean, generator)
    # width and height of one box go together (objects are not random rectangles)
    w = head.dense2.weight
    w[3].mul_(0.5).add_(0.5 * w[2])
    head.dense2.bias[3] = head.dense2.bias[2]


def _calibrate_text(model, tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Remove from the text projection the direction every text shares; returns (T, Dq) text
    embeddings after the change."""
    core = model.base_model
    enc = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
    pooled = core.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
    common = pooled.mean(0)
    common = common / common.norm()
    proj = core.text_projection.weight  # (Dq, Dt)
    proj.sub_(torch.outer(proj @ common, common))
    return pooled @ proj.T


def _calibrate_classes(
    model, tokens: torch.Tensor, text_embeds: torch.Tensor, varied_norms: bool, generator
) -> None:
    """Class head: centred (optionally anisotropic) class embeddings, then the logit shift and
    scale solved so two quantiles of the cosines land on :data:`LOW_PROB` and :data:`HIGH_PROB`."""
    head = model.class_head
    mu = tokens.mean(0)
    if varied_norms:  # stretch a few directions so token norms differ several-fold
        q, _ = torch.linalg.qr(
            torch.randn(head.dense0.out_features, head.dense0.out_features, generator=generator)
        )
        gains = torch.logspace(math.log10(0.05), math.log10(10.0), head.dense0.out_features)
        head.dense0.weight.copy_((q * gains) @ q.T @ head.dense0.weight)
    head.dense0.bias.copy_(-(head.dense0.weight @ mu))
    embeds = F.normalize(head.dense0(tokens), dim=-1)
    cos = embeds @ F.normalize(text_embeds, dim=-1).T  # (T_img, T_txt)
    lo, hi = torch.quantile(cos.flatten(), torch.tensor([LOW_QUANTILE, HIGH_QUANTILE]))
    scale = (_logit(HIGH_PROB) - _logit(LOW_PROB)) / float(hi - lo)
    shift = _logit(LOW_PROB) / scale - float(lo)
    # per-token shift and scale vary a little (as learned ones do) but far less than the cosines
    small = 0.08 * float(cos.std())
    _standardise_linear(head.logit_shift, tokens, torch.tensor([small]), torch.tensor([shift]), generator)
    _standardise_linear(
        head.logit_scale, tokens, torch.tensor([0.03 * scale]), torch.tensor([scale - 1.0]), generator
    )


def _calibrate_objectness(model, tokens: torch.Tensor, generator) -> None:
    """OWLv2's objectness: most tokens unlikely objects, a few confident (logit mean -2, std 1.5)."""
    head = model.objectness_head
    hidden = F.gelu(head.dense1(F.gelu(head.dense0(tokens))))
    _standardise_linear(head.dense2, hidden, torch.tensor([1.5]), torch.tensor([-2.0]), generator)


@torch.no_grad()
def calibrate_heads(
    model,
    processor,
    tokenizer,
    images: Sequence[Image.Image],
    *,
    texts: Sequence[str] = CALIBRATION_TEXTS,
    large_boxes: bool = False,
    varied_norms: bool = False,
    seed: int = 0,
) -> None:
    """Rescale ``model``'s detection heads (and its text projection) in place; see the module
    docstring. ``model`` is an ``OwlViTForObjectDetection`` or ``Owlv2ForObjectDetection``."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    tokens = _tokens(model, processor, images)
    _calibrate_boxes(model, tokens, LARGE_BOXES if large_boxes else STANDARD_BOXES, generator)
    text_embeds = _calibrate_text(model, tokenizer, texts)
    _calibrate_classes(model, tokens, text_embeds, varied_norms, generator)
    if hasattr(model, "objectness_head"):
        _calibrate_objectness(model, tokens, generator)


def default_calibration_images() -> list[Image.Image]:
    """Real photos shipped inside installed packages (scikit-image, matplotlib); synthetic scenes
    when neither is installed, so the command still works."""
    photos: list[Image.Image] = []
    try:
        from pathlib import Path

        import skimage

        folder = Path(skimage.__file__).parent / "data"
        for name in ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "ihc.png"):
            if (folder / name).is_file():
                photos.append(Image.open(folder / name).convert("RGB"))
    except ImportError:
        pass
    try:
        from pathlib import Path

        import matplotlib

        hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if hopper.is_file():
            photos.append(Image.open(hopper).convert("RGB"))
    except ImportError:
        pass
    return photos or _synthetic_scenes(6)


def _synthetic_scenes(count: int) -> list[Image.Image]:
    """Gradient backgrounds with a few coloured rectangles and ellipses (deterministic)."""
    from PIL import ImageDraw

    generator = torch.Generator().manual_seed(1234)
    scenes = []
    for _ in range(count):
        colours = (torch.rand(2, 3, generator=generator) * 255).int().tolist()
        img = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
        img = Image.composite(
            Image.new("RGB", img.size, tuple(colours[0])),
            Image.new("RGB", img.size, tuple(colours[1])),
            img.convert("L"),
        )
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x0, y0 = (torch.rand(2, generator=generator) * torch.tensor([240.0, 170.0])).tolist()
            w, h = (20 + torch.rand(2, generator=generator) * 90).tolist()
            fill = tuple((torch.rand(3, generator=generator) * 255).int().tolist())
            (draw.ellipse if torch.rand(1, generator=generator) < 0.5 else draw.rectangle)(
                [x0, y0, x0 + w, y0 + h], fill=fill
            )
        scenes.append(img)
    return scenes
