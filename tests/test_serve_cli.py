"""``clipcrop serve`` with a model that cannot load exits non-zero with the reason, never serves 503 forever."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from clipcrop.serve.app import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def weightless_model(tmp_path):
    """A folder that passes the argument checks (an OWL-ViT config.json) but has no weights."""
    folder = tmp_path / "owlvit-without-weights"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "owlvit"}')
    return folder


def serve(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "clipcrop.cli", "serve", "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,  # before: never returned
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_exits_1_when_the_model_cannot_load(weightless_model, workers):
    r = serve("--model", str(weightless_model), "--workers", workers)
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("clipcrop: error:")]
    assert len(errors) == 1, r.stderr
    assert f"{weightless_model}: cannot load the model in this folder" in errors[0]
    assert "Traceback" not in r.stderr


def test_serve_with_a_missing_model_folder_is_a_usage_error(tmp_path):
    r = serve("--model", str(tmp_path / "nonexistent"))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"clipcrop: error: {tmp_path / 'nonexistent'}: no such folder\n"


def test_on_load_error_is_called_with_the_message_and_ready_keeps_it():
    from fastapi.testclient import TestClient

    told: list[str] = []

    def loader():
        raise ValueError("weights are corrupt")

    app = create_app(loader, on_load_error=told.append)
    with TestClient(app) as c:
        deadline = time.monotonic() + 30
        while not told and time.monotonic() < deadline:
            time.sleep(0.02)
        assert told == ["ValueError: weights are corrupt"]
        r = c.get("/ready")
        assert r.status_code == 503 and "weights are corrupt" in r.json()["error"]["message"]
