"""The first run without internet: one probe of the Hub, then the cache or one clear error line."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import sample_photo

from clipcrop.modeling import hub_access

PHOTO = str(sample_photo("coffee.png"))


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def online_env(tmp_path: Path, endpoint: str) -> dict:
    """The environment of a user who never set HF_HUB_OFFLINE, with an empty cache of their own."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update({"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf-home"), "OMP_NUM_THREADS": "1"})
    return env


def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clipcrop.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_first_run_without_the_hub_is_one_error_line(tmp_path):
    """Before: five retries per request (about 30 s) and 22 warning lines; now one line saying how
    to download the model with the installed huggingface_hub and how to try ClipCrop without it."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    r = run_cli("crop", PHOTO, "--json", env=online_env(tmp_path, endpoint))
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith("clipcrop: error: cannot load 'google/owlvit-base-patch32'")
    assert f"Hugging Face Hub ({endpoint}) cannot be reached" in line
    assert "hf download google/owlvit-base-patch32 --local-dir DIR" in line and "--model DIR" in line
    assert "clipcrop make-random-backbone" in line


def test_a_cached_hub_model_loads_at_once_when_the_hub_is_unreachable(tiny_backbone_dir, tmp_path):
    """A model in the Hugging Face cache is used without a single retry against the dead endpoint."""
    env = online_env(tmp_path, f"http://127.0.0.1:{closed_port()}")
    repo = Path(env["HF_HOME"]) / "hub" / "models--test-org--owlvit-tiny"
    commit = "0" * 40
    shutil.copytree(tiny_backbone_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    r = run_cli("crop", PHOTO, "--json", "--model", "test-org/owlvit-tiny", "--top-k", "2", env=env)
    assert r.returncode == 0, r.stderr
    assert '"crops": [{' in r.stdout
    assert "Retrying" not in r.stderr and "thrown while requesting" not in r.stderr, r.stderr


class _AnyAnswer(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(404)  # an error status still proves the Hub's host answers
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_probe_counts_any_answer_and_remembers_it(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(hub_access, "_reachable", {})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the test run's own setting: not the user's
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AnyAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        assert hub_access.hub_reachable() and not hub_access.hub_was_unreachable()
    finally:
        server.shutdown()
        server.server_close()
    assert hub_access.hub_reachable()  # remembered: the server is gone, no second request
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert hub_access.stay_local("org/model", None) is True and hub_access.hub_was_unreachable()
    assert hub_access.stay_local("org/model", False) is False  # the caller's choice stands
    assert hub_access.stay_local("./local-folder", None) is None  # nothing to ask for a folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_access.stay_local("org/model", None) is None  # offline: huggingface_hub knows already


@pytest.mark.parametrize("version,tool", [("2.4.0", "hf"), ("0.34.1", "hf"), ("0.23.5", "huggingface-cli")])
def test_download_command_matches_the_installed_huggingface_hub(monkeypatch, version, tool):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "__version__", version)
    assert hub_access.download_command("org/m") == f"{tool} download org/m --local-dir DIR"
    assert shutil.which("hf", path=str(Path(sys.executable).parent))  # the installed one has `hf`
