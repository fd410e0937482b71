"""Shared fixtures: tiny random OWL-ViT checkpoints built once per session, real sample photos."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def sample_photo(name: str) -> Path:
    """Path of a real photo shipped inside scikit-image or matplotlib."""
    if name == "grace_hopper.jpg":
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    import skimage

    return Path(skimage.__file__).parent / "data" / name


def make_calibrated(tmp_path_factory, name: str, **kwargs) -> Path:
    """A tiny random OWL-ViT/OWLv2 whose heads are calibrated to behave like pretrained ones
    (varied boxes, unsaturated probabilities, query-driven ranking; see tests/test_fixtures.py)."""
    from clipcrop.synthetic.random_models import make_random_owlvit

    return make_random_owlvit(
        tmp_path_factory.mktemp(name), DATA, size="tiny", seed=0, calibrate=True, **kwargs
    )


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory) -> Path:
    """Calibrated tiny OWL-ViT (96 px, 36 tokens)."""
    return make_calibrated(tmp_path_factory, "owlvit-tiny")


@pytest.fixture(scope="session")
def tiny_owlv2_dir(tmp_path_factory) -> Path:
    """Calibrated tiny OWLv2 (black square padding, objectness head)."""
    return make_calibrated(tmp_path_factory, "owlv2-tiny", kind="owlv2")


@pytest.fixture(scope="session")
def tiny_large_boxes_dir(tmp_path_factory) -> Path:
    """Calibrated tiny OWL-ViT with mostly large boxes and class-embedding norms that vary from
    token to token: where OWL-ViT's image-query rule differs from naive ones."""
    return make_calibrated(tmp_path_factory, "owlvit-large", large_boxes=True, varied_norms=True)


@pytest.fixture(scope="session")
def tiny_owlv2_large_boxes_dir(tmp_path_factory) -> Path:
    """The OWLv2 counterpart of :func:`tiny_large_boxes_dir`."""
    return make_calibrated(tmp_path_factory, "owlv2-large", kind="owlv2", large_boxes=True, varied_norms=True)


TINY_DECODER = {
    "input_dim": 32,
    "d_model": 32,
    "num_queries": 12,
    "num_layers": 2,
    "num_heads": 4,
    "ffn_dim": 64,
    "dropout": 0.0,
}


def build_tiny_clipcrop(backbone_dir: Path, out: Path) -> Path:
    """A seeded tiny ClipCrop checkpoint on ``backbone_dir`` (what ``tiny_clipcrop_dir`` holds)."""
    import torch

    from clipcrop.modeling.model import ClipCropModel

    torch.manual_seed(0)
    model = ClipCropModel(backbone=str(backbone_dir), decoder=TINY_DECODER)
    # a fresh decoder predicts b_u for every query; spread its offsets like a trained one would
    with torch.no_grad():
        torch.nn.init.normal_(model.decoder.offset_head.layers[-1].weight, std=0.05)
        torch.nn.init.normal_(model.decoder.offset_head.layers[-1].bias, std=0.15)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_clipcrop_dir(tiny_backbone_dir, tmp_path_factory) -> Path:
    return build_tiny_clipcrop(tiny_backbone_dir, tmp_path_factory.mktemp("clipcrop-tiny"))


@pytest.fixture(scope="session")
def tiny_cc(tiny_clipcrop_dir):
    from clipcrop import ClipCrop

    return ClipCrop.from_pretrained(tiny_clipcrop_dir)


@pytest.fixture(scope="session")
def tiny_free_cc(tiny_backbone_dir):
    from clipcrop import ClipCrop

    return ClipCrop.from_pretrained(tiny_backbone_dir)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models on a busy 2-core machine: more than one intra-op thread only thrashes."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never reach the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
