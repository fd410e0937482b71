"""Default output carries only what the user needs: no library progress bars from the Python API,
no Ray log lines from ``batch`` (unless ``--verbose``), a profile that names the stages that ran."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import sample_photo


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)  # as in a user's program: bars are on
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return run_python(f"import sys; from clipcrop.cli.main import main; sys.exit(main({list(args)!r}))")


def test_python_api_prints_no_loading_bar_and_restores_the_switches(tiny_clipcrop_dir):
    code = (
        "from transformers.utils import logging as hf_logging\n"
        "from huggingface_hub import utils as hub_utils\n"
        "assert hf_logging.is_progress_bar_enabled() and not hub_utils.are_progress_bars_disabled()\n"
        "from clipcrop import ClipCrop\n"
        f"cc = ClipCrop.from_pretrained({str(tiny_clipcrop_dir)!r})\n"
        f"cc.crop({str(sample_photo('coffee.png'))!r}, query='a cup')\n"
        "assert hf_logging.is_progress_bar_enabled() and not hub_utils.are_progress_bars_disabled()\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "Loading weights" not in r.stderr and "it/s" not in r.stderr, r.stderr


def test_progress_switches_are_restored_even_when_they_were_off():
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    from clipcrop.io.progress import library_progress_off

    was_t, was_h = hf_logging.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled()
    try:
        for state in (True, False):
            (hf_logging.enable_progress_bar if state else hf_logging.disable_progress_bar)()
            with library_progress_off():
                assert not hf_logging.is_progress_bar_enabled() and hub_utils.are_progress_bars_disabled()
            assert hf_logging.is_progress_bar_enabled() is state
            assert hub_utils.are_progress_bars_disabled() is not state
    finally:
        (hf_logging.enable_progress_bar if was_t else hf_logging.disable_progress_bar)()
        (hub_utils.enable_progress_bars if was_h else hub_utils.disable_progress_bars)()


def profile_stages(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("stage"))
    return [line.split()[0] for line in lines[start + 1 :] if re.match(r"\s+\w+\s+[\d.]+\s+[\d.]+%", line)]


@pytest.mark.parametrize("trained", [False, True], ids=["training-free", "trained"])
def test_profile_names_the_stages_that_ran(tiny_backbone_dir, tiny_clipcrop_dir, trained):
    model = tiny_clipcrop_dir if trained else tiny_backbone_dir
    photo = str(sample_photo("coffee.png"))
    r = run_cli("crop", photo, "--query", "a cup", "--profile", "--quiet", "--model", str(model))
    assert r.returncode == 0, r.stderr
    stages = profile_stages(r.stderr)
    ranking = "decoder" if trained else "compose"
    assert stages == [
        "decode",
        "preprocess",
        "backbone",
        "keywords",
        "text_encoder",
        "select",
        ranking,
        "postprocess",
    ]
    r = run_cli("crop", photo, "--profile", "--quiet", "--model", str(model))  # no query: no text stages
    assert profile_stages(r.stderr) == ["decode", "preprocess", "backbone", "select", ranking, "postprocess"]


def test_batch_prints_its_summary_and_nothing_of_ray(tiny_backbone_dir, tmp_path):
    pytest.importorskip("ray.data")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(sample_photo("coffee.png"), photos / "c.png")
    out = tmp_path / "r.jsonl"
    r = run_cli(
        "batch", str(photos), "--out", str(out), "--model", str(tiny_backbone_dir), "--num-workers", "1"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("clipcrop batch: 1 done, 0 failed"), r.stderr
