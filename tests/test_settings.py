"""Settings converted once at the edge, and defaults kept in one place (issue #13 items 2 and 3)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import pickle
import re
import time

import pytest

from clipcrop.cli.main import build_parser
from clipcrop.errors import BackboneLoadError, ModelLoadError
from clipcrop.limits import Limits
from clipcrop.modeling.decoder_config import DecoderConfig
from clipcrop.settings import ENV_BACKBONE, ENV_DEVICE, ENV_MODEL, ENV_PRECISION, ENV_QUANTIZE, ModelSettings


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


# ----------------------------------------------------------------------------- model settings


def test_model_flags_take_their_defaults_from_model_settings(monkeypatch):
    for name in ("CLIPCROP_MAX_MEGAPIXELS", "CLIPCROP_MAX_TOP_K"):
        monkeypatch.delenv(name, raising=False)
    from clipcrop.cli.crop import model_settings

    for command, argv in (
        ("crop", ["x.jpg"]),
        ("detect", ["x.jpg", "-q", "a"]),
        ("evaluate", ["--dataset", "gaic", "--root", "r"]),
    ):
        args = subparser(command).parse_args(argv)
        assert model_settings(args) == ModelSettings(limits=Limits()), command
    # batch's own device default, through the same function (no edited argparse internals)
    batch = subparser("batch")
    assert batch.parse_args(["in", "--out", "o.jsonl"]).device == "auto"
    assert "(default auto)" in batch.format_help().replace("\n", " ").replace("  ", " ")
    args = subparser("crop").parse_args(["x.jpg", "--max-megapixels", "2", "--precision", "bf16"])
    assert model_settings(args) == ModelSettings(precision="bf16", limits=Limits(max_pixels=2_000_000))


def test_from_pretrained_defaults_are_the_settings_defaults():
    from clipcrop.predictor import ClipCrop

    params = inspect.signature(ClipCrop.from_pretrained).parameters
    defaults = ModelSettings()
    for name in ("device", "precision", "quantize", "backbone", "local_files_only"):
        assert params[name].default == getattr(defaults, name), name


def test_settings_from_env_and_back(monkeypatch):
    env = {
        ENV_MODEL: "some/ckpt",
        ENV_BACKBONE: "/b",
        ENV_DEVICE: "cuda:1",
        ENV_PRECISION: "fp16",
        ENV_QUANTIZE: "",
    }
    monkeypatch.setenv("CLIPCROP_MAX_MEGAPIXELS", "3")
    settings = ModelSettings.from_env(env)
    assert settings == ModelSettings(
        model="some/ckpt",
        backbone="/b",
        device="cuda:1",
        precision="fp16",
        limits=Limits(max_pixels=3_000_000),
    )
    assert ModelSettings.from_env(settings.to_env()) == settings
    assert ModelSettings.from_env({}).replace(limits=Limits()) == ModelSettings()  # empty: the defaults


def test_app_from_env_loads_what_the_variables_say(monkeypatch, tiny_backbone_dir):
    """The service builds its predictor from ModelSettings.from_env (was: a fake argparse
    Namespace handed to the CLI's loader)."""
    from fastapi.testclient import TestClient

    from clipcrop.serve import app as serve_app

    seen = []

    def load(self):
        seen.append(self)
        raise ModelLoadError("not loading in this test")

    monkeypatch.setattr(ModelSettings, "load", load)
    monkeypatch.setenv(ENV_MODEL, str(tiny_backbone_dir))
    monkeypatch.setenv(ENV_PRECISION, "bf16")
    monkeypatch.setenv("CLIPCROP_MAX_QUERY_CHARS", "40")
    with TestClient(serve_app.app_from_env()) as client:
        for _ in range(200):
            if client.get("/ready").status_code != 503 or seen:
                break
            time.sleep(0.05)
    assert seen and seen[0].model == str(tiny_backbone_dir) and seen[0].precision == "bf16"
    assert seen[0].limits.max_query_chars == 40


def test_backbone_error_speaks_of_the_parameter_and_survives_pickling():
    exc = BackboneLoadError("ck", "/gone", "no such folder")
    assert isinstance(exc, ModelLoadError) and str(exc).endswith("backbone= (a folder or Hub id)")
    cli = exc.with_parameter("--backbone DIR_OR_HUB_ID")
    assert str(cli).startswith("checkpoint 'ck' refers to backbone '/gone'") and str(cli).endswith(
        "--backbone DIR_OR_HUB_ID"
    )
    back = pickle.loads(pickle.dumps(cli))
    assert type(back) is BackboneLoadError and str(back) == str(cli) and back.backbone == "/gone"


# ----------------------------------------------------------------------------- train defaults


def _train_config(tmp_path, *flags: str):
    from clipcrop.cli.train import build_config

    argv = [
        "--gaic-root",
        str(tmp_path),
        "--text-annotations",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        *flags,
    ]
    return build_config(subparser("train").parse_args(argv))


def test_train_without_flags_is_train_config(tmp_path, monkeypatch):
    """``clipcrop train`` with no decoder (or other) flags trains what ``TrainConfig()`` trains:
    the CLI used to default to a 6-layer, 1024-wide decoder while DecoderConfig said 4 and 512."""
    monkeypatch.delenv("CLIPCROP_MODEL", raising=False)
    from clipcrop.build import decoder_config
    from clipcrop.training.config import TrainConfig

    cli = _train_config(tmp_path)
    lib = TrainConfig(gaic_root=str(tmp_path), text_annotations=str(tmp_path), out_dir=str(tmp_path / "o"))
    assert dataclasses.asdict(cli) == dataclasses.asdict(lib)
    assert decoder_config(cli.decoder, input_dim=32) == decoder_config(lib.decoder, input_dim=32)
    assert decoder_config(cli.decoder) == DecoderConfig()
    assert (DecoderConfig().num_layers, DecoderConfig().ffn_dim) == (4, 512)


def test_train_flags_override_only_what_they_name(tmp_path):
    cfg = _train_config(tmp_path, "--num-layers", "2", "--no-mosaic", "--text-drop", "0.5")
    assert cfg.decoder == {
        **{k: v for k, v in DecoderConfig().to_dict().items() if k != "input_dim"},
        "num_layers": 2,
    }
    assert (cfg.mosaic, cfg.text_drop, cfg.aux_loss, cfg.feature_cache) == (False, 0.5, True, True)


def test_train_help_shows_the_config_defaults():
    from clipcrop.training.config import TrainConfig

    config, decoder = TrainConfig(), DecoderConfig()
    checked = 0
    for action in subparser("train")._actions:
        found = re.search(r"\(default ([^);:,]+)", action.help or "")
        if not found or action.dest in ("epochs", "backbone"):  # backbone: "$CLIPCROP_MODEL or ..."
            continue
        value = decoder.to_dict().get(action.dest, getattr(config, action.dest, None))
        if value is None:
            continue
        shown = found.group(1)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            assert shown == str(value), action.dest
        else:
            assert float(shown) == value, action.dest
        checked += 1
    assert checked >= 10


# ----------------------------------------------------------------------------- one copy of a default


def test_training_free_top_k_limit_is_the_default_crop_count(tiny_free_cc, monkeypatch):
    from clipcrop import predictor

    assert tiny_free_cc.max_top_k == predictor.DEFAULT_NUM_CROPS == DecoderConfig().num_queries
    monkeypatch.setattr(predictor, "DEFAULT_NUM_CROPS", 7)
    assert tiny_free_cc.max_top_k == 7  # not a literal of its own


def test_condition_texts_fill_missing_settings_from_the_selection_defaults():
    from clipcrop.modeling.selection import condition_texts
    from clipcrop.modeling.selection_settings import DEFAULT_SELECTION

    text = "a dog on a boat"
    assert condition_texts(text, {}) == condition_texts(text, DEFAULT_SELECTION)
    texts, _ = condition_texts(text, {"use_full_text": False})
    assert texts and all(t.startswith("a photo of a ") for t in texts)


# ----------------------------------------------------------------------------- evaluation


def test_evaluate_loads_the_model_its_settings_name_after_the_data(tmp_path, tiny_clipcrop_dir, tiny_cc):
    from gaic_fixture import write_gaic

    from clipcrop.errors import DatasetError
    from clipcrop.evaluation.harness import EvalConfig, evaluate, evaluate_samples, load_samples

    gaic = write_gaic(tmp_path / "gaic")
    config = EvalConfig("gaic", str(gaic.root), limit=2)
    got = evaluate(config, ModelSettings(model=str(tiny_clipcrop_dir)))
    assert got.metrics == evaluate_samples(tiny_cc, load_samples(config), "gaic").metrics
    with pytest.raises(DatasetError):  # no data: the data error, not a model load
        evaluate(EvalConfig("gaic", str(tmp_path / "none")), ModelSettings(model=str(tmp_path / "no-model")))


def test_a_sample_of_the_other_dataset_is_a_parameter_error(tiny_cc, tmp_path):
    """Was an ``assert`` (gone under ``python -O``)."""
    from gaic_fixture import write_gaic

    from clipcrop.data.datasets import load_gaic
    from clipcrop.errors import ParameterError
    from clipcrop.evaluation.harness import evaluate_samples

    samples = load_gaic(write_gaic(tmp_path / "gaic").root, "test")
    with pytest.raises(ParameterError, match="GaicSample is not a sample of dataset 'textcrop'"):
        evaluate_samples(tiny_cc, samples, "textcrop")
