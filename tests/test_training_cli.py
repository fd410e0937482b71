"""The ``train`` / ``finetune-backbone`` / ``check-data`` command lines: every default in the help,
flags into configs, usage errors before torch, progress lines with an ETA."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys

import pytest

from clipcrop.cli.main import build_parser

COMMANDS = ("train", "finetune-backbone", "check-data")


def subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_every_default(command):
    """Every optional flag that takes a value says its default (or what happens without it)."""
    missing = []
    for action in subparser(command)._actions:
        if action.required or action.nargs == 0 or not action.option_strings:
            continue  # required flags, switches (off unless given), positionals
        if "default" not in (action.help or ""):
            missing.append(action.option_strings[0])
    assert not missing


def test_cli_spellings_equal_the_library():
    from clipcrop.cli import run_flags, train
    from clipcrop.training import reporting, sizing, validation

    assert train.BEST_METRICS == validation.BEST_METRICS
    assert run_flags.REPORT_TO == reporting.REPORT_TO
    assert train.DRY_RUN_STEPS == sizing.DRY_RUN_STEPS


def _config(tmp_path, *flags: str):
    from clipcrop.cli.train import build_config

    base = ["--gaic-root", str(tmp_path), "--text-annotations", str(tmp_path), "--out", str(tmp_path / "o")]
    return build_config(subparser("train").parse_args([*base, *flags]))


def test_train_flags_reach_the_config(tmp_path):
    cfg = _config(tmp_path)
    assert (cfg.device, cfg.mixed_precision, cfg.val_split, cfg.report_to) == (
        "auto",
        "no",
        "val",
        "tensorboard",
    )
    assert (cfg.save_every, cfg.save_each_epoch, cfg.keep_checkpoints, cfg.best_metric) == (
        500,
        True,
        3,
        None,
    )
    text = tmp_path / "val_text.json"
    text.write_text("[]")
    cfg = _config(
        tmp_path,
        *("--device", "cuda:1", "--precision", "bf16", "--val-split", "none", "--val-text", str(text)),
        *("--val-limit", "20", "--best-metric", "text_iou_mean", "--report-to", "none"),
        *("--save-every", "0", "--keep-checkpoints", "5", "--no-epoch-checkpoints"),
    )
    assert (cfg.device, cfg.mixed_precision, cfg.val_split, cfg.val_text) == (
        "cuda:1",
        "bf16",
        None,
        str(text),
    )
    assert (cfg.val_limit, cfg.best_metric, cfg.report_to) == (20, "text_iou_mean", "none")
    assert (cfg.save_every, cfg.save_each_epoch, cfg.keep_checkpoints) == (None, False, 5)
    assert _config(tmp_path, "--cpu").device == "cpu"
    assert _config(tmp_path, "--mixed-precision", "fp16").mixed_precision == "fp16"


def test_usage_errors_come_before_torch(tmp_path):
    code = (
        "import sys; from clipcrop.cli.main import main as run\n"
        "def main(argv):\n"
        "    try:\n        return run(argv)\n"
        "    except SystemExit as exc:\n        return exc.code\n"
        f"root = {str(tmp_path)!r}\n"
        "base = ['train', '--gaic-root', root, '--text-annotations', root, '--out', root + '/o']\n"
        "assert main([*base, '--device', 'gpu']) == 2\n"
        "assert main([*base, '--val-text', root + '/nope.json']) == 2\n"
        "assert main([*base, '--device', 'cpu', '--cpu']) == 2\n"
        "assert main(['finetune-backbone', '--data', root + '/m.jsonl', '--out', root, '--device', 'tpu']) == 2\n"
        "bad = [m for m in ('torch', 'transformers', 'spacy') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    (tmp_path / "m.jsonl").write_text("")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("clipcrop: error:")]
    assert errors[0] == "clipcrop: error: --device takes auto, cpu, cuda or cuda:N, got 'gpu'"
    assert errors[1] == f"clipcrop: error: --val-text {tmp_path}/nope.json: no such file or folder"
    assert "not allowed with argument" in errors[2]
    assert errors[3] == "clipcrop: error: --device takes auto, cpu, cuda or cuda:N, got 'tpu'"


def test_progress_lines_give_the_eta(monkeypatch):
    from clipcrop.cli import train

    clock = iter([100.0, 110.0, 200.0])
    monkeypatch.setattr(train.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    lines = train.ProgressLines(out)
    # resumed at step 100 of 300; a line every 3 steps (1% of 300)
    lines({"step": 101, "total_steps": 300, "loss": 0.5, "step_time": 2.0})  # started at 98 s
    lines({"step": 104, "total_steps": 300, "loss": 0.4, "step_time": 2.0})  # not a multiple of 3: quiet
    lines({"step": 150, "total_steps": 300, "loss": 0.25, "step_time": 2.0})
    # 50 steps in 102 s: 2.04 s/step, 150 steps left = 306 s = 5 min
    assert out.getvalue().splitlines() == [
        "clipcrop: step 150/300 (50%), loss 0.2500, 2.04 s/step, ETA 5 min",
    ]
    assert train.eta_text(44) == "44 s" and train.eta_text(3 * 3600 + 8 * 60) == "3 h 08 min"


def test_library_messages_name_settings_and_the_cli_names_flags(tmp_path, capsys):
    """The library speaks of its parameters; train and finetune-backbone reword them as flags."""
    from clipcrop.cli.main import main
    from clipcrop.cli.run_flags import flag_spelling
    from clipcrop.errors import ParameterError
    from clipcrop.training.config import TrainConfig

    with pytest.raises(ParameterError, match=r"\(text_annotations\), or use variant='base'"):
        TrainConfig(gaic_root=str(tmp_path)).validate()
    args = subparser("train").parse_args(["--gaic-root", "g", "--out", "o"])
    assert (
        flag_spelling("batch_size must be at least 1, got 0", args)
        == "--batch-size must be at least 1, got 0"
    )
    assert flag_spelling("lr_schedule 'x' is not one of", args) == "--lr-schedule 'x' is not one of"
    assert (
        flag_spelling("lr already holds a checkpoint; set resume=True", args)
        == "lr already holds a checkpoint; set --resume"
    )
    assert flag_spelling("mixed_precision 'x' is not one of", args) == "--precision 'x' is not one of"

    root = tmp_path / "g"
    (root / "images" / "train").mkdir(parents=True)
    base = ["train", "--gaic-root", str(root), "--variant", "base", "--out", str(tmp_path / "o")]
    assert main([*base, "--keep-checkpoints", "0"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "clipcrop: error: --keep-checkpoints must be a positive whole number, got 0"
    )
    assert main(["train", "--gaic-root", str(root), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == (
        "clipcrop: error: --variant 'full' trains on captions: pass the text annotations folder "
        "(--text-annotations DIR), or use --variant base"
    )
    out = tmp_path / "ck"
    out.mkdir()
    (out / "config.json").write_text("{}")
    assert main(["train", "--gaic-root", str(root), "--variant", "base", "--out", str(out), "--cpu"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"clipcrop: error: {out} already holds a checkpoint; set --resume to continue it, "
        "--overwrite to replace it, or another --out"
    )
