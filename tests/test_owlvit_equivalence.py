"""ClipCrop against transformers' own OWL-ViT / OWLv2 code, the reference nobody here wrote.

On calibrated checkpoints (varied boxes, unsaturated probabilities, query-driven ranking) and
on square, wide, tall (1:3) and EXIF-rotated real photos:

* text queries: ``detect`` ranks tokens as processor + ``...ForObjectDetection`` +
  ``post_process_grounded_object_detection`` (with the image's target size) do; top-1 box within
  1 px, logits within 1e-4 relative; the ``zero-shot-object-detection`` pipeline agrees;
* image queries: the same query token as ``embed_image_query`` picks, and the same top token and
  box as ``image_guided_detection`` + ``post_process_image_guided_detection``.

Everything on the reference side goes through transformers' public processors and models with
the photo opened by Pillow, so a change in transformers' preprocessing or post-processing shows
up here as a failing test. ``LARGEST`` collects the largest differences seen (printed with -s).
"""

from __future__ import annotations

import pytest
import torch
from conftest import sample_photo
from PIL import Image, ImageOps

from clipcrop import ClipCrop

LARGEST: dict[str, float] = {}
BACKBONES = ["tiny_backbone_dir", "tiny_owlv2_dir", "tiny_large_boxes_dir", "tiny_owlv2_large_boxes_dir"]
QUERIES = ["a human face", "a helmet", "a cat on a blanket", "the rocket engine exhaust plume at night"]


def _note(key: str, value: float) -> None:
    LARGEST[key] = max(LARGEST.get(key, 0.0), float(value))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, str]:
    """Real photos in four shapes: square, wide, tall (1:3) and EXIF-rotated (upright = chelsea)."""
    folder = tmp_path_factory.mktemp("equivalence-photos")
    astronaut = Image.open(sample_photo("astronaut.png")).convert("RGB")
    coffee = Image.open(sample_photo("coffee.png")).convert("RGB")
    chelsea = Image.open(sample_photo("chelsea.png")).convert("RGB")
    out = {"square": str(sample_photo("astronaut.png"))}
    coffee.crop((0, 100, 600, 300)).save(folder / "wide.png")  # 3:1
    astronaut.crop((170, 0, 340, 510)).save(folder / "tall.png")  # 1:3
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    chelsea.transpose(Image.Transpose.ROTATE_90).save(folder / "rotated.jpg", exif=exif, quality=95)
    out.update(
        wide=str(folder / "wide.png"), tall=str(folder / "tall.png"), rotated=str(folder / "rotated.jpg")
    )
    return out


def _upright(path: str) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


@pytest.fixture(scope="module")
def reference(request):
    """(our predictor, transformers' model, transformers' processor) per calibrated checkpoint."""
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    cache = {}

    def get(fixture: str):
        if fixture not in cache:
            folder = request.getfixturevalue(fixture)
            model = AutoModelForZeroShotObjectDetection.from_pretrained(folder).eval()
            cache[fixture] = (
                ClipCrop.from_pretrained(folder),
                model,
                AutoProcessor.from_pretrained(folder),
                folder,
            )
        return cache[fixture]

    return get


def _clamp(box: torch.Tensor, width: int, height: int) -> list[float]:
    x0, y0, x1, y1 = box.tolist()
    return [min(max(x0, 0), width), min(max(y0, 0), height), min(max(x1, 0), width), min(max(y1, 0), height)]


@pytest.mark.parametrize("shape", ["square", "wide", "tall", "rotated"])
@pytest.mark.parametrize("fixture", BACKBONES)
def test_text_query_detections_equal_transformers(fixture, shape, photos, reference):
    cc, model, processor, _ = reference(fixture)
    image = _upright(photos[shape])
    width, height = image.size
    for query in QUERIES:
        inputs = processor(text=[[query]], images=image, return_tensors="pt")
        with torch.no_grad():
            outputs = model(**inputs)
        ref = processor.post_process_grounded_object_detection(
            outputs, threshold=0.0, target_sizes=[(height, width)]
        )[0]
        logits = outputs.logits[0, :, 0]
        order = torch.argsort(logits, descending=True)
        ours = cc.detect(photos[shape], query=query, top_k=5)
        assert (ours.width, ours.height) == (width, height)
        assert [d.token for d in ours] == order[:5].tolist(), (fixture, shape, query)
        top = int(order[0])
        # post-processing keeps every token at threshold 0, in token order
        ref_box = _clamp(ref["boxes"][top], width, height)
        box_diff = max(abs(a - b) for a, b in zip(ours[0].box, ref_box, strict=True))
        assert box_diff <= 1.0, (fixture, shape, query, ours[0].box, ref_box)
        assert ours[0].score == pytest.approx(float(ref["scores"][top]), rel=1e-4, abs=1e-6)
        for det in ours:
            expected = float(logits[det.token])
            assert abs(det.logit - expected) <= 1e-4 * max(1.0, abs(expected)), (fixture, shape, query)
            _note(f"text logit rel {fixture}", abs(det.logit - expected) / max(1.0, abs(expected)))
        _note(f"text box px {fixture}", box_diff)


@pytest.mark.parametrize("fixture", ["tiny_backbone_dir", "tiny_owlv2_dir"])
def test_zero_shot_pipeline_agrees(fixture, photos, reference):
    from transformers import pipeline

    cc, _, _, folder = reference(fixture)
    detector = pipeline("zero-shot-object-detection", model=str(folder), device="cpu")
    for shape in ("square", "wide", "tall"):
        image = _upright(photos[shape])
        for query in QUERIES[:2]:
            best = detector(image, candidate_labels=[query], threshold=0.0, top_k=1)[0]
            ours = cc.detect(photos[shape], query=query, top_k=1)[0]
            ref_box = [
                best["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")
            ]  # the pipeline truncates to ints
            clamped = _clamp(torch.tensor(ref_box, dtype=torch.float64), image.width, image.height)
            assert max(abs(a - b) for a, b in zip(ours.box, clamped, strict=True)) <= 1.0 + 1e-6
            assert ours.score == pytest.approx(best["score"], rel=1e-4, abs=1e-6)


def _reference_query_token(model, processor, query_image: Image.Image) -> int:
    """The query image's token transformers' ``embed_image_query`` chooses."""
    pixel_values = processor(images=query_image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        feature_map = model.image_embedder(pixel_values=pixel_values)[0]
        b, h, w, d = feature_map.shape
        feats = feature_map.reshape(b, h * w, d)
        _, indices, _ = model.embed_image_query(feats, feature_map)
    return int(indices.flatten()[0])


QUERY_IMAGES = {  # reference images cut from other real photos: (photo, crop box)
    "face": ("astronaut.png", (150, 20, 300, 200)),
    "cat": ("chelsea.png", (60, 20, 330, 300)),
    "cup": ("coffee.png", (120, 0, 480, 300)),
    "rider": ("motorcycle_left.png", (0, 0, 741, 500)),
    "hopper": ("grace_hopper.jpg", (100, 50, 430, 500)),
    "horse": ("horse.png", (0, 0, 400, 328)),
}


@pytest.fixture(scope="module")
def query_images(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("query-images")
    out = {}
    for name, (photo, box) in QUERY_IMAGES.items():
        Image.open(sample_photo(photo)).convert("RGB").crop(box).save(folder / f"{name}.png")
        out[name] = str(folder / f"{name}.png")
    return out


@pytest.mark.parametrize("fixture", BACKBONES)
def test_image_query_token_and_detections_equal_transformers(fixture, photos, query_images, reference):
    cc, model, processor, _ = reference(fixture)
    target_path = photos["wide"]
    target = _upright(target_path)
    for name, query_path in query_images.items():
        query_image = _upright(query_path)
        ours = cc.detect(target_path, image_query=query_path, top_k=3)
        assert ours.query_token == _reference_query_token(model, processor, query_image), (fixture, name)
        inputs = processor(images=target, query_images=query_image, return_tensors="pt")
        with torch.no_grad():
            outputs = model.image_guided_detection(**inputs)
        logits = outputs.logits[0, :, 0]
        top = int(torch.argmax(logits))
        assert ours[0].token == top, (fixture, name)
        ref = processor.post_process_image_guided_detection(
            outputs,
            threshold=0.0,
            nms_threshold=0.3,
            target_sizes=torch.tensor([[target.height, target.width]]),
        )[0]
        best = int(torch.argmax(ref["scores"]))  # alpha 1.0: the best-scoring token
        ref_box = _clamp(ref["boxes"][best], target.width, target.height)
        box_diff = max(abs(a - b) for a, b in zip(ours[0].box, ref_box, strict=True))
        assert box_diff <= 1.0, (fixture, name, ours[0].box, ref_box)
        assert abs(ours[0].logit - float(logits[top])) <= 1e-4 * max(1.0, abs(float(logits[top])))
        _note(f"image box px {fixture}", box_diff)
        _note(
            f"image logit rel {fixture}",
            abs(ours[0].logit - float(logits[top])) / max(1.0, abs(float(logits[top]))),
        )


def test_naive_image_query_rules_pick_other_tokens(query_images, reference):
    """The fixtures can tell the rules apart: ranking normalised embeddings with IoU on clamped
    boxes (ClipCrop's old rule) picks another token than OWL-ViT on some query images, and
    OWLv2's objectness rule picks another than OWL-ViT's IoU rule would."""
    from clipcrop.ops.box_ops import box_iou

    differs = 0
    cc, model, processor, _ = reference("tiny_large_boxes_dir")
    for query_path in query_images.values():
        feats = cc.encode(query_path).features
        boxes = feats.boxes[0]
        ious = box_iou(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), boxes)[0][0]
        selected = (ious >= ious.max() * 0.8).nonzero().flatten()
        embeds = feats.class_embeds[0]
        naive = int(selected[torch.argmin(embeds[selected] @ embeds.mean(0))])
        differs += naive != _reference_query_token(model, processor, _upright(query_path))
    assert differs >= 1
    cc2, model2, processor2, _ = reference("tiny_owlv2_large_boxes_dir")
    iou_rule = 0
    for query_path in query_images.values():
        feats = cc2.encode(query_path).features
        raw = feats.raw_class_embeds[0]
        ious = box_iou(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), feats.model_boxes[0])[0][0]
        selected = (ious >= ious.max() * 0.8).nonzero().flatten()
        by_iou = int(selected[torch.argmin(raw[selected] @ raw.mean(0))])
        iou_rule += by_iou != _reference_query_token(model2, processor2, _upright(query_path))
    assert iou_rule >= 1


def test_owlv2_pads_with_black(tiny_owlv2_dir):
    """transformers' OWLv2 processor pads the square with 0 (black) before normalising, as the
    official OWLv2 code does; our pixels are the processor's own."""
    from transformers import AutoProcessor

    from clipcrop.modeling.backbone import Backbone

    bb = Backbone.from_pretrained(tiny_owlv2_dir)
    image = Image.new("RGB", (300, 100), (255, 255, 255))
    ours = bb.preprocess([image])[0]
    ref = AutoProcessor.from_pretrained(tiny_owlv2_dir)(images=image, return_tensors="pt")["pixel_values"][0]
    assert torch.equal(ours, ref)
    mean = torch.tensor(bb.processor.image_mean)
    std = torch.tensor(bb.processor.image_std)
    black = (0.0 - mean) / std
    assert torch.allclose(ours[:, -1, ours.shape[2] // 2], black, atol=1e-5)  # bottom row: padding


@pytest.fixture(scope="module", autouse=True)
def _report_largest():
    """Print the largest differences seen (``pytest -s``), for the record."""
    yield
    for key in sorted(LARGEST):
        print(f"largest {key}: {LARGEST[key]:.3g}")
