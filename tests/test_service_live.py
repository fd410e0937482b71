"""``clipcrop serve`` as a real uvicorn process on a free loopback port: concurrent clients, then
clients that vanish mid-upload and mid-request, then a clean shutdown."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import sample_photo
from PIL import Image

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "grace_hopper.jpg")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``python -m clipcrop.cli serve`` process; logs go to a file."""

    def __init__(self, model: Path, log: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "clipcrop.cli", "serve", "--port", str(self.port), "--model", str(model)]
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        self.proc = subprocess.Popen(
            [*cmd, *extra], stdout=self.log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        saw_503 = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                r = httpx.get(self.base + "/ready", timeout=2)
                if r.status_code == 200:
                    return
                saw_503 = saw_503 or r.status_code == 503
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"server not ready after {timeout} s:\n{self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(tiny_clipcrop_dir, tmp_path_factory):
    srv = Server(
        tiny_clipcrop_dir,
        tmp_path_factory.mktemp("serve") / "server.log",
        env={"CLIPCROP_MAX_CONCURRENCY": "2", "CLIPCROP_MAX_QUEUE": "16"},
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        code = srv.stop()
        log = srv.log_path.read_text(errors="replace")
        # uvicorn shuts down gracefully, then re-raises SIGTERM on itself
        assert code in (0, -signal.SIGTERM), log
        assert "Application shutdown complete" in log and "Traceback" not in log, log


def test_concurrent_clients(server):
    photos = {name: sample_photo(name).read_bytes() for name in PHOTOS}
    sizes = {name: Image.open(io.BytesIO(data)).size for name, data in photos.items()}
    answers: dict[tuple, list] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(base_url=server.base, timeout=120) as http:
            for j in range(5):
                name = PHOTOS[(i + j) % len(PHOTOS)]
                fields = {"top_k": "3"}
                if (i + j) % 2:
                    fields["query"] = "a face"
                if j == 4:
                    fields["aspect"] = "1:1"
                key = (name, tuple(sorted(fields.items())))
                r = http.post("/v1/crop", files={"image": (name, photos[name])}, data=fields)
                if r.status_code != 200:
                    failures.append(f"{name}: {r.status_code} {r.text[:200]}")
                    continue
                body = r.json()
                ok = (
                    body["image"] == name
                    and (body["width"], body["height"]) == sizes[name]
                    and len(body["crops"]) == 3
                    and body["query"] == fields.get("query")
                )
                if not ok:
                    failures.append(f"{name}: wrong answer {body}")
                with lock:
                    answers.setdefault(key, []).append([c["box"] for c in body["crops"]])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not failures, failures
    assert sum(len(v) for v in answers.values()) == 20
    for key, boxes in answers.items():  # the same request always gets the same crops
        assert all(b == boxes[0] for b in boxes), key

    r = httpx.post(
        server.base + "/v1/crop/image",
        files={"image": ("cat.png", photos["chelsea.png"])},
        data={"format": "webp", "top_k": "1"},
        timeout=120,
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    x0, y0, x1, y1 = map(int, r.headers["x-crop-box"].split(","))
    assert Image.open(io.BytesIO(r.content)).size == (x1 - x0, y1 - y0)


def _raw_request(port: int, body: bytes, declared: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (
        "POST /v1/crop HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: multipart/form-data; boundary=BOUNDARY\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    s.sendall(head + body)
    return s


def _multipart(image: bytes) -> bytes:
    return (
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + image + b"\r\n--BOUNDARY--\r\n"
    )


def test_disconnecting_clients_leak_no_slot(server):
    photo = sample_photo("astronaut.png").read_bytes()
    body = _multipart(photo)
    # 1. gone mid-upload: headers and a third of the body, then the connection closes
    for _ in range(3):
        s = _raw_request(server.port, body[: len(body) // 3], len(body))
        time.sleep(0.05)
        s.close()
    # 2. gone mid-request: the whole upload, then close without reading the answer
    for _ in range(3):
        _raw_request(server.port, body, len(body)).close()
    # every slot comes back once the abandoned work ends
    deadline = time.monotonic() + 120
    while True:
        ready = httpx.get(server.base + "/ready", timeout=10).json()
        if (ready["running"], ready["waiting"]) == (0, 0):
            break
        assert time.monotonic() < deadline, ready
        time.sleep(0.1)
    # and the service still answers, at full concurrency
    results: list[int] = []

    def one() -> None:
        r = httpx.post(server.base + "/v1/crop", files={"image": ("a.png", photo)}, timeout=120)
        results.append(r.status_code)

    threads = [threading.Thread(target=one) for _ in range(ready["max_concurrency"] + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert results == [200] * len(threads)
    assert "Traceback" not in server.log_text()


def test_listens_on_loopback_only(server):
    assert "http://127.0.0.1:" in server.log_text()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))  # UDP: picks the outgoing address, sends nothing
            addr = probe.getsockname()[0]
    except OSError:
        addr = "127.0.0.1"
    if addr.startswith("127.") or addr == "0.0.0.0":
        pytest.skip("this machine has no non-loopback address to probe")
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex((addr, server.port)) != 0, f"reachable on {addr}"


def test_api_key_never_reaches_the_log(tiny_backbone_dir, tmp_path):
    """With debug logging, right and wrong keys in both header styles leave no trace in the log."""
    key = "k3y-that-must-not-leak-7f9c"
    srv = Server(
        tiny_backbone_dir, tmp_path / "server.log", "--log-level", "debug", env={"CLIPCROP_API_KEY": key}
    )
    try:
        srv.wait_ready()
        photo = sample_photo("coffee.png").read_bytes()
        files = {"image": ("coffee.png", photo, "image/png")}
        assert httpx.post(srv.base + "/v1/crop", files=files, timeout=60).status_code == 401
        wrong = {"Authorization": f"Bearer {key}x"}
        assert httpx.post(srv.base + "/v1/crop", files=files, headers=wrong, timeout=60).status_code == 401
        for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
            assert (
                httpx.post(srv.base + "/v1/crop", files=files, headers=headers, timeout=60).status_code == 200
            )
    finally:
        srv.stop()
    log = srv.log_path.read_text(errors="replace")
    assert "/v1/crop" in log  # the requests were logged...
    assert key not in log  # ...the key was not
