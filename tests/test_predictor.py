"""The inference API end to end on tiny random checkpoints loaded through ``from_pretrained``."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from conftest import sample_photo
from PIL import Image

from clipcrop import (
    ClipCrop,
    ImageTooLargeError,
    Limits,
    ModelLoadError,
    ParameterError,
    QueryError,
    UnreadableImageError,
)
from clipcrop.modeling.backbone import Backbone
from clipcrop.modeling.model import ClipCropModel

ASTRONAUT = sample_photo("astronaut.png")
HOPPER = sample_photo("grace_hopper.jpg")


@pytest.mark.parametrize("fixture", ["tiny_cc", "tiny_free_cc"])
def test_modes_and_result_shape(fixture, request):
    cc = request.getfixturevalue(fixture)
    result = cc.crop(HOPPER, query="a woman in uniform", top_k=3)
    assert result.mode == ("trained" if fixture == "tiny_cc" else "training-free")
    assert len(result) == 3
    assert (result.width, result.height) == Image.open(HOPPER).size
    scores = [c.score for c in result]
    assert scores == sorted(scores, reverse=True)
    for c in result:
        x0, y0, x1, y1 = c.box
        assert all(isinstance(v, int) for v in c.box)
        assert 0 <= x0 < x1 <= result.width and 0 <= y0 < y1 <= result.height
        assert 0.0 <= c.score <= 1.0
    # keywords whose best token is implausible (probability under min_score) are dropped
    kept = set(result.keywords)
    assert kept <= {"woman", "uniform"}
    everything = cc.__class__(cc.backbone, cc.model, selection={"min_score": 0.0}).crop(
        HOPPER, query="a woman in uniform", top_k=3
    )
    assert everything.keywords == ["woman", "uniform"]


@pytest.mark.parametrize("fixture", ["tiny_cc", "tiny_free_cc"])
@pytest.mark.parametrize("kwargs", [{"query": "a middle-aged woman"}, {}, {"image_query": ASTRONAUT}])
def test_encode_then_crop_equals_crop(fixture, kwargs, request):
    cc = request.getfixturevalue(fixture)
    direct = cc.crop(HOPPER, top_k=4, **kwargs)
    enc = cc.encode(HOPPER)
    again = enc.crop(top_k=4, **kwargs)
    assert [c.box for c in direct] == [c.box for c in again]
    assert [c.score for c in direct] == pytest.approx([c.score for c in again], abs=1e-6)


def test_encode_runs_the_vision_tower_once_for_many_queries(tiny_cc, monkeypatch):
    calls = {"n": 0}
    original = tiny_cc.backbone.model.image_embedder

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_cc.backbone.model, "image_embedder", counting)
    enc = tiny_cc.encode(HOPPER)
    for q in ["a woman", "a flag", "a medal on a uniform", "a woman"]:
        enc.crop(query=q)
    assert calls["n"] == 1


def test_text_embeddings_are_cached(tiny_cc):
    bb = tiny_cc.backbone
    enc = tiny_cc.encode(HOPPER)
    enc.crop(query="a completely new query string")
    misses = bb.text_cache_misses
    enc.crop(query="a completely new query string")
    assert bb.text_cache_misses == misses


@pytest.mark.parametrize("fixture", ["tiny_cc", "tiny_free_cc"])
@pytest.mark.parametrize("aspect,ratio", [("1:1", 1.0), ("16:9", 16 / 9), ("9:16", 9 / 16), ("4:5", 0.8)])
def test_aspect_ratio_is_exact(fixture, aspect, ratio, request):
    cc = request.getfixturevalue(fixture)
    result = cc.crop(HOPPER, query="a red handbag", aspect_ratio=aspect, top_k=5)
    assert len(result) >= 1
    for c in result:
        w, h = c.box[2] - c.box[0], c.box[3] - c.box[1]
        assert abs(w - h * ratio) <= max(1.0, ratio) + 1e-9, (c.box, aspect)


def test_impossible_requests_are_errors(tiny_cc):
    with pytest.raises(ParameterError):
        tiny_cc.crop(HOPPER, aspect_ratio="0:1")
    with pytest.raises(ParameterError):
        tiny_cc.crop(HOPPER, top_k=0)
    with pytest.raises(ParameterError):
        tiny_cc.crop(HOPPER, top_k=tiny_cc.max_top_k + 1)
    with pytest.raises(QueryError):
        tiny_cc.crop(HOPPER, query="   ")
    with pytest.raises(QueryError):
        tiny_cc.crop(HOPPER, query="x" * 513)
    with pytest.raises(QueryError):
        tiny_cc.crop(HOPPER, query="a dog", image_query=ASTRONAUT)


def test_query_length_limit_is_configurable(tiny_backbone_dir):
    cc = ClipCrop.from_pretrained(tiny_backbone_dir, limits=Limits(max_query_chars=10))
    with pytest.raises(QueryError):
        cc.crop(HOPPER, query="a dog on a boat")
    assert len(cc.crop(HOPPER, query="a dog")) >= 1


def test_bad_images(tiny_cc, tmp_path):
    with pytest.raises(UnreadableImageError):
        tiny_cc.crop(tmp_path / "missing.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(UnreadableImageError):
        tiny_cc.crop(tmp_path / "text.jpg")
    data = HOPPER.read_bytes()
    with pytest.raises(UnreadableImageError):
        tiny_cc.crop(data[: len(data) // 3])
    small = ClipCrop(tiny_cc.backbone, tiny_cc.model, limits=Limits(max_pixels=1000))
    with pytest.raises(ImageTooLargeError):
        small.crop(HOPPER)


def test_exif_rotation_gives_upright_geometry(tiny_cc):
    img = Image.new("RGB", (300, 100), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    result = tiny_cc.crop(buf.getvalue(), top_k=2)
    assert (result.width, result.height) == (100, 300)
    assert all(c.box[2] <= 100 and c.box[3] <= 300 for c in result)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA", "1"])
def test_image_modes(tiny_free_cc, mode):
    base = Image.open(ASTRONAUT).convert("RGB").resize((64, 48))
    img = base.convert("L").convert("I;16") if mode == "I;16" else base.convert(mode)
    assert len(tiny_free_cc.crop(img, top_k=1)) == 1


def test_boxes_map_back_for_non_square_images(tiny_free_cc):
    """A normalised box maps to exact pixels of a very non-square image."""
    boxes = np.array([[0.25, 0.5, 0.75, 1.0]])
    crops = tiny_free_cc.postprocess(boxes, np.array([0.9]), 400, 100, top_k=1, ratio=None)
    assert crops[0].box == (100, 50, 300, 100)
    crops = tiny_free_cc.postprocess(boxes, np.array([0.9]), 40, 4000, top_k=1, ratio=None)
    assert crops[0].box == (10, 2000, 30, 4000)


@pytest.mark.parametrize("model_type", ["owlvit", "owlv2"])
def test_backbone_boxes_are_relative_to_the_upright_image(tiny_backbone_dir, tiny_owlv2_dir, model_type):
    """OWL-ViT stretches (boxes already image fractions); OWLv2 pads bottom/right to a square."""
    if model_type == "owlv2":
        bb = Backbone.from_pretrained(tiny_owlv2_dir)
    else:
        bb = Backbone.from_pretrained(tiny_backbone_dir)
    n = bb.model.box_bias.shape[0]
    # every token predicts the square-normalised box cxcywh (0.5, 0.125, 1.0, 0.25)
    fixed = torch.tensor([0.5, 0.125, 1.0, 0.25]).expand(1, n, 4).clone()
    bb.model.box_predictor = lambda feats, fmap, *a: fixed.expand(feats.shape[0], -1, -1)
    img = Image.new("RGB", (400, 100))
    feats = bb.encode(bb.preprocess([img]), [(400, 100)])
    expected = [0.0, 0.0, 1.0, 0.25] if model_type == "owlvit" else [0.0, 0.0, 1.0, 1.0]
    assert feats.boxes[0, 0].tolist() == pytest.approx(expected)


def test_checkpoint_round_trip_gives_identical_crops(tiny_cc, tmp_path):
    tiny_cc.model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    assert (tmp_path / "ckpt" / "README.md").is_file()
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["clipcrop_format"] == "clipcrop/1" and config["decoder"]["num_queries"] == 12
    loaded = ClipCrop.from_pretrained(tmp_path / "ckpt")
    assert loaded.mode == "trained"
    a = tiny_cc.crop(HOPPER, query="a woman", top_k=5)
    b = loaded.crop(HOPPER, query="a woman", top_k=5)
    assert [c.box for c in a] == [c.box for c in b]
    assert [c.score for c in a] == [c.score for c in b]


def test_checkpoint_with_embedded_backbone(tiny_backbone_dir, tmp_path):
    import shutil

    model = ClipCropModel(
        backbone="does/not-exist",
        decoder={
            "input_dim": 32,
            "d_model": 32,
            "num_queries": 6,
            "num_layers": 1,
            "num_heads": 4,
            "ffn_dim": 32,
        },
    )
    model.save_pretrained(tmp_path / "ckpt")
    shutil.copytree(tiny_backbone_dir, tmp_path / "ckpt" / "backbone")
    cc = ClipCrop.from_pretrained(tmp_path / "ckpt")
    assert cc.mode == "trained" and len(cc.crop(HOPPER, top_k=2)) == 2


def test_model_load_errors(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="no such folder"):
        ClipCrop.from_pretrained(str(tmp_path / "nope") + "/")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        ClipCrop.from_pretrained(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="bert"):
        ClipCrop.from_pretrained(tmp_path / "other")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError) as info:
        ClipCrop.from_pretrained("google/owlvit-base-patch32")
    assert "HF_HUB_OFFLINE" in str(info.value) and "local folder" in str(info.value)


def test_weights_missing_from_folder(tiny_backbone_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_backbone_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="broken"):
        ClipCrop.from_pretrained(broken)


def test_clipcrop_model_env_default(tiny_backbone_dir, monkeypatch):
    monkeypatch.setenv("CLIPCROP_MODEL", str(tiny_backbone_dir))
    assert ClipCrop.from_pretrained().mode == "training-free"


def test_result_json(tiny_cc):
    result = tiny_cc.crop(HOPPER, query="a woman", top_k=2)
    d = result.to_dict()
    keys = {"image", "width", "height", "query", "crops", "error", "truncated", "subject", "priors"}
    assert set(d) == keys
    assert d["truncated"] is False and d["priors"] == []
    assert d["subject"] == list(result.union_box)  # conditioned: the subject is b_u
    assert d["query"] == "a woman" and d["error"] is None
    assert set(d["crops"][0]) == {"box", "score", "aspect", "focus"}
    assert d["crops"][0]["aspect"] is None
    x0, y0, x1, y1 = d["crops"][0]["box"]
    assert x0 <= d["crops"][0]["focus"][0] <= x1 and y0 <= d["crops"][0]["focus"][1] <= y1
    assert tiny_cc.crop(HOPPER, top_k=1).to_dict()["subject"] is None  # unconditioned
    ext = result.to_dict(extended=True)
    assert ext["mode"] == "trained" and "backbone" in ext["timings"]


def test_unreachable_hub_is_named_in_the_error(tmp_path, monkeypatch):
    """With the Hub allowed but unreachable (a closed local port), the error says so and how to fix it."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "2")
    import importlib

    import huggingface_hub.constants as hub_constants

    importlib.reload(hub_constants)
    try:
        with pytest.raises(ModelLoadError) as info:
            ClipCrop.from_pretrained("google/owlvit-base-patch32")
    finally:
        for var in ("HF_ENDPOINT", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        importlib.reload(hub_constants)
    message = str(info.value)
    assert "cannot be reached" in message and "--model" in message and "hf download" in message


def test_limits_from_env(monkeypatch):
    monkeypatch.setenv("CLIPCROP_MAX_MEGAPIXELS", "2.5")
    monkeypatch.setenv("CLIPCROP_MAX_TOP_K", "3")
    limits = Limits.from_env(max_query_chars=20)
    assert (limits.max_pixels, limits.max_top_k, limits.max_query_chars) == (2_500_000, 3, 20)
    monkeypatch.setenv("CLIPCROP_MAX_QUEUE", "lots")
    with pytest.raises(ParameterError, match="CLIPCROP_MAX_QUEUE"):
        Limits.from_env()
