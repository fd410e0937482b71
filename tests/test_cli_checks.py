"""Argument errors of every model-loading subcommand: exit 2, one line, before torch is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import sample_photo

from clipcrop.limits import Limits
from clipcrop.model_source import DEFAULT_NUM_CROPS, local_config, looks_local, max_top_k, num_crops

PHOTO = str(sample_photo("coffee.png"))

# each case: argv after "clipcrop", and a piece of the one error line
CASES = [
    (["crop", PHOTO, "--top-k", "0"], "top_k must be between 1 and 90, got 0"),
    (["crop", PHOTO, "--top-k", "-3"], "top_k must be between 1 and 90, got -3"),
    (["crop", PHOTO, "--top-k", "91"], "top_k must be between 1 and 90, got 91"),
    (["crop", PHOTO, "--aspect", "0:1"], "aspect ratio '0:1'"),
    (["crop", PHOTO, "--query", "   "], "query is empty"),
    (["crop", PHOTO, "--batch-size", "0"], "--batch-size must be at least 1"),
    (
        ["crop", PHOTO, "--image-query", "/no/such/query.jpg"],
        "--image-query /no/such/query.jpg: no such file",
    ),
    (["crop", PHOTO, "--model", "/no/such/model"], "/no/such/model: no such folder"),
    (["crop", PHOTO, "--model", PHOTO], "is a file"),
    (
        ["crop", PHOTO, "--quantize", "int8", "--precision", "bf16"],
        "int8 cannot be combined with precision bf16",
    ),
    (["crop", PHOTO, "--max-megapixels", "0"], "--max-megapixels must be positive"),
    (["crop", "/no/such/photo.jpg", PHOTO], "/no/such/photo.jpg: no such file or folder"),
    (["crop", "/no/such/dir/*.jpg"], "/no/such/dir/*.jpg: no image matches this pattern"),
    (["batch", "/no/such/folder", "--out", "r.jsonl"], "INPUT /no/such/folder: no such file or folder"),
    (
        ["batch", str(Path(PHOTO).parent), "--out", "r.jsonl", "--num-workers", "0"],
        "--num-workers must be at least 1",
    ),
    (["batch", str(Path(PHOTO).parent), "--out", "r.jsonl", "--query", "\t"], "query is empty"),
    (["batch", str(Path(PHOTO).parent), "--out", "r.jsonl", "--model", "./nope"], "./nope: no such folder"),
    (["serve", "--port", "70000"], "--port must be between 1 and 65535"),
    (["serve", "--workers", "0"], "--workers must be at least 1"),
    (["serve", "--max-upload-mb", "-1"], "--max-upload-mb must be positive"),
    (["serve", "--model", "/no/such/model"], "/no/such/model: no such folder"),
    (["evaluate", "--dataset", "gaic", "--root", "/no/such/gaic"], "--root /no/such/gaic: no such folder"),
    (["evaluate", "--dataset", "gaic", "--root", ".", "--limit", "0"], "--limit must be at least 1"),
    (
        ["evaluate", "--dataset", "textcrop", "--root", ".", "--model", "/no/model"],
        "/no/model: no such folder",
    ),
    (["train", "--gaic-root", "/no/such/gaic", "--out", "ck"], "--gaic-root /no/such/gaic: no such folder"),
    (["train", "--gaic-root", ".", "--backbone", "/no/owlvit", "--out", "ck"], "/no/owlvit: no such folder"),
    (["finetune-backbone", "--data", "/no/such.jsonl", "--out", "o"], "--data /no/such.jsonl: no such file"),
    (["demo-shapes", "--model", "/no/shapes", "--out", "o"], "/no/shapes: no such folder"),
]


def test_every_argument_error_exits_2_with_one_line_before_torch(tmp_path):
    """All cases in one fresh interpreter: each returns 2 with one error line, and after all of
    them torch, transformers and spaCy were never imported (so no model could have loaded)."""
    code = f"""
import contextlib, io, json, sys
from clipcrop.cli.main import main
out = []
for argv, _ in {CASES!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    out.append([rc, err.getvalue()])
out.append([m for m in ("torch", "transformers", "spacy", "ray") if m in sys.modules])
print(json.dumps(out))
"""
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 0, r.stderr
    *results, heavy = json.loads(r.stdout.splitlines()[-1])
    assert heavy == []
    for (argv, needle), (rc, err) in zip(CASES, results, strict=True):
        lines = err.splitlines()
        assert rc == 2, (argv, err)
        assert len(lines) == 1 and lines[0].startswith("clipcrop: error: "), (argv, err)
        assert needle in lines[0], (argv, err)


def test_unknown_flag_prints_the_subcommands_usage():
    r = subprocess.run(
        [sys.executable, "-m", "clipcrop.cli", "crop", PHOTO, "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.startswith("usage: clipcrop crop ") and "--top-k N" in r.stderr
    assert r.stderr.splitlines()[-1] == "clipcrop: error: unrecognized arguments: --bogus"
    r = subprocess.run(
        [sys.executable, "-m", "clipcrop.cli", "serve", "--bogus"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and r.stderr.startswith("usage: clipcrop serve ")


def test_top_k_limit_is_the_models_before_and_after_loading(
    tiny_clipcrop_dir, tiny_backbone_dir, monkeypatch
):
    """The limit read from config.json without torch is the loaded predictor's, with the same message."""
    from clipcrop import ClipCrop
    from clipcrop.cli.main import main
    from clipcrop.errors import ParameterError

    trained = local_config(str(tiny_clipcrop_dir))
    assert num_crops(trained) == 12  # conftest's TINY_DECODER
    assert num_crops(local_config(str(tiny_backbone_dir))) == DEFAULT_NUM_CROPS == 90
    for folder in (tiny_clipcrop_dir, tiny_backbone_dir):
        for cap in (None, 7, 500):
            limits = Limits(max_top_k=cap)
            cc = ClipCrop.from_pretrained(folder, limits=limits)
            assert max_top_k(local_config(str(folder)), limits) == cc.max_top_k
    cc = ClipCrop.from_pretrained(tiny_clipcrop_dir)
    with pytest.raises(ParameterError) as after:
        cc.crop(PHOTO, top_k=13)
    assert str(after.value) == "top_k must be between 1 and 12, got 13"
    import io
    from contextlib import redirect_stderr

    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["crop", PHOTO, "--top-k", "13", "--model", str(tiny_clipcrop_dir)]) == 2
    assert err.getvalue() == f"clipcrop: error: {after.value}\n"
    monkeypatch.setenv("CLIPCROP_MAX_TOP_K", "4")
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["crop", PHOTO, "--top-k", "5", "--model", str(tiny_backbone_dir)]) == 2
    assert err.getvalue() == "clipcrop: error: top_k must be between 1 and 4, got 5\n"


def test_local_model_folders_are_checked_from_config_json(tmp_path):
    assert looks_local("./m") and looks_local("/m") and looks_local("a/b/c")
    assert not looks_local("google/owlvit-base-patch32")
    from clipcrop.errors import ModelLoadError

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="folder has no config.json"):
        local_config(str(tmp_path / "empty"))
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelLoadError, match="model_type='bert'"):
        local_config(str(tmp_path / "bert"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        local_config(str(tmp_path / "broken"))
    ckpt = {"clipcrop_format": "1", "decoder": {"num_queries": 30}}
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(ckpt))
    assert num_crops(local_config(str(tmp_path / "ckpt"))) == 30
    with pytest.raises(ModelLoadError, match="ClipCrop needs an OWL-ViT or OWLv2"):
        local_config(str(tmp_path / "ckpt"), backbone_only=True)
    assert max_top_k(None, Limits()) == 90 and max_top_k(ckpt, Limits(max_top_k=8)) == 8


@pytest.mark.parametrize(
    "argv,needle",
    [
        (
            ["train", "--gaic-root", "{d}", "--text-annotations", "{d}", "--out", "{d}/ck", "--lr", "0"],
            "learning rates must be positive",
        ),
        (["train", "--gaic-root", "{d}", "--out", "{d}/ck"], "pass the text annotations folder"),
        (
            ["train", "--gaic-root", "{d}", "--variant", "base", "--out", "{d}/ck", "--epochs", "0"],
            "epochs must be a positive",
        ),
        (
            ["finetune-backbone", "--data", "{d}/m.jsonl", "--out", "{d}/o", "--zoom", "2"],
            "zoom must be in [0, 1]",
        ),
        (
            ["finetune-backbone", "--data", "{d}/m.jsonl", "--out", "{d}/o", "--max-steps", "-1"],
            "--max-steps must be a positive",  # the library's max_steps, in the command's words
        ),
    ],
)
def test_run_settings_are_usage_errors_before_any_data_loads(tmp_path, capsys, argv, needle):
    """Settings that only the run's config class checks (it lives beside torch) still exit 2 with
    one line, before the (empty) data folder or any model is read."""
    from clipcrop.cli.main import main

    (tmp_path / "m.jsonl").write_text("")
    assert main([a.format(d=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("clipcrop: error: ") and needle in err[0], err
    assert not (tmp_path / "ck").exists() and not (tmp_path / "o").exists()
