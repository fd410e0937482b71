"""The README's first command writes ``photo.jpg``'s crops into ``crops/``: neither may end up in a commit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_outputs_are_ignored_at_the_root_only():
    lines = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
    assert {"/photo.jpg", "/crops/"} <= lines  # root-anchored: tests/data/**/photo.jpg stays trackable
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("no git checkout to ask")
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "photo.jpg", "crops/photo_crop1.jpg", "tests/photo.jpg"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert ignored == ["photo.jpg", "crops/photo_crop1.jpg"]
