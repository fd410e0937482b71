"""The README's training guide, run literally on the GAIC-format fixture.

Only the two folder assignments of the guide's tested block change (they point at the fixture),
and ``CLIPCROP_MODEL`` names the tiny backbone that the guide's default backbone resolves to; every
other line runs as written, with the defaults it implies (30 epochs, batch 8, validation on val).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from gaic_fixture import PHOTOS, write_gaic

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- training-guide: run literally by tests/test_training_guide.py -->"


def guide_block() -> list[str]:
    text = README.read_text(encoding="utf-8")
    assert MARKER in text
    block = re.search(r"```bash\n(.*?)```", text[text.index(MARKER) :], re.S)
    assert block is not None
    return block.group(1).strip().splitlines()


def test_the_readme_training_guide_runs_as_written(tiny_backbone_dir, tmp_path):
    fixture = write_gaic(
        tmp_path / "GAIC",
        {
            "train": list(PHOTOS),
            "val": ["chelsea.png", "rocket.jpg", "grace_hopper.jpg"],
            "test": list(PHOTOS),
        },
    )
    lines = guide_block()
    assert [line.split("=")[0] for line in lines[:2]] == ["GAIC", "CAPTIONS"]
    script = [f"GAIC={fixture.root}", f"CAPTIONS={fixture.text_dir}", *lines[2:]]
    assert all(line.startswith("clipcrop ") for line in script[2:])
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "CLIPCROP_MODEL": str(tiny_backbone_dir),
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    done = subprocess.run(
        ["bash", "-e", "-c", "\n".join(script)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout.splitlines()
    # check-data: the counts, and no error (the fixture's split sizes are warnings)
    assert "train: 6 images, 6 annotation files, 168 rated crops, 6 captions" in out
    assert "0 errors, 3 warnings" in out
    # the dry run: 6 samples, batch 8 -> 1 step per epoch, 30 epochs
    assert "samples: 6; steps per epoch: 1; total steps: 30" in out
    # the run: 30 steps, a validation each epoch, best/ and TensorBoard
    ckpt = work / "ckpt"
    log = [json.loads(line) for line in (ckpt / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["event"] == "validation"] == list(range(1, 31))
    assert json.loads((ckpt / "checkpoint.json").read_text())["step"] == 30
    best = json.loads((ckpt / "best" / "best.json").read_text())
    assert best["metric"] == "acc1_5" and any((ckpt / "tensorboard").iterdir())
    # evaluate on the test split with ckpt/best
    start = next(i for i, line in enumerate(out) if line.startswith("{"))
    result = json.loads("\n".join(out[start:]))
    assert result["dataset"] == "gaic" and result["samples"] == 6 and result["mode"] == "trained"
    assert 0.0 <= result["metrics"]["acc1_5"] <= 1.0
