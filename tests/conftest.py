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


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory) -> Path:
    from clipcrop.random_models import make_random_owlvit

    return make_random_owlvit(tmp_path_factory.mktemp("owlvit-tiny"), DATA, size="tiny", seed=0)


TINY_DECODER = {
    "input_dim": 32,
    "d_model": 32,
    "num_queries": 12,
    "num_layers": 2,
    "num_heads": 4,
    "ffn_dim": 64,
    "dropout": 0.0,
}


@pytest.fixture(scope="session")
def tiny_clipcrop_dir(tiny_backbone_dir, tmp_path_factory) -> Path:
    import torch

    from clipcrop.model import ClipCropModel

    torch.manual_seed(0)
    model = ClipCropModel(backbone=str(tiny_backbone_dir), decoder=TINY_DECODER)
    # a fresh decoder predicts b_u for every query; spread its offsets like a trained one would
    with torch.no_grad():
        torch.nn.init.normal_(model.decoder.offset_head.layers[-1].weight, std=0.05)
        torch.nn.init.normal_(model.decoder.offset_head.layers[-1].bias, std=0.15)
    out = tmp_path_factory.mktemp("clipcrop-tiny")
    model.save_pretrained(out)
    return out


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
