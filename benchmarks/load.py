"""Load test of ``clipcrop serve``: bounded concurrent traffic, valid photos mixed with hostile uploads.

    python benchmarks/load.py --model DIR [--clients 8] [--requests 400] [--hostile-every 4]
                              [--concurrency 2] [--json report.json]

Starts the service on a free loopback port (``python -m clipcrop.cli serve``), waits for
``/ready``, warms it up (every valid request kind once, which also records the reference answer
of each), then ``--clients`` threads send ``--requests`` requests in total, each waiting for its
answer before sending the next. Every ``--hostile-every``-th request is hostile (not an image,
SVG, PDF, truncated JPEG, empty file, a pixel bomb, bad parameters, an upload above the limit).

Reports throughput, p50/p99 latency, status counts and the server's RSS (``/proc/PID/status``
VmRSS) at start, after warm-up, after the first quarter of the traffic and at the end.
Exits 1 when any answer is a 5xx, a valid request is answered wrongly (status, size, number of
crops, aspect ratio, or crops different from the reference answer), a hostile request gets
another status than expected, or a request fails at the transport level.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image, ImageDraw, ImageOps

UPLOAD_LIMIT_MB = 2.0
QUERIES = (None, "a face", "a cup on a table")
ASPECTS = (None, "1:1", "16:9")
TOP_K = 3


# ----------------------------------------------------------------------------------- payloads
@dataclass(frozen=True)
class Payload:
    """One kind of request: the upload, the form fields and what a correct answer looks like."""

    name: str
    filename: str
    data: bytes
    fields: dict
    expect: int  # HTTP status
    size: tuple[int, int] | None = None  # valid requests: upright (width, height)

    @property
    def valid(self) -> bool:
        return self.expect == 200


def _photos() -> list[tuple[str, bytes]]:
    """Real photos from scikit-image / matplotlib when installed, else drawn ones."""
    out: list[tuple[str, bytes]] = []
    try:
        import skimage

        folder = Path(skimage.__file__).parent / "data"
        out += [(n, (folder / n).read_bytes()) for n in ("astronaut.png", "coffee.png", "chelsea.png")]
    except (ImportError, OSError):
        pass
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        out.append(("grace_hopper.jpg", path.read_bytes()))
    except (ImportError, OSError):
        pass
    if not out:
        for i, (w, h) in enumerate([(640, 480), (480, 640), (512, 512)]):
            img = Image.new("RGB", (w, h), (40 + 60 * i, 120, 200))
            draw = ImageDraw.Draw(img)
            draw.ellipse((w // 4, h // 4, w // 2, h // 2), fill=(230, 180, 40))
            draw.rectangle((w // 2, h // 2, w - 20, h - 20), fill=(30, 160, 90))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=90)
            out.append((f"drawn_{i}.jpg", buf.getvalue()))
    return out


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels in a few dozen bytes (a pixel bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def build_payloads() -> tuple[list[Payload], list[Payload]]:
    """(valid, hostile) request kinds."""
    valid = []
    photos = _photos()
    for i, (name, data) in enumerate(photos):
        size = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size
        for j, query in enumerate(QUERIES):
            aspect = ASPECTS[(i + j) % len(ASPECTS)]
            fields = {"top_k": str(TOP_K)}
            if query:
                fields["query"] = query
            if aspect:
                fields["aspect"] = aspect
            valid.append(Payload(f"{name}|{query}|{aspect}", name, data, fields, 200, size))
    jpeg = next((d for n, d in photos if n.endswith(".jpg")), photos[0][1])
    hostile = [
        Payload("text_as_jpeg", "notes.jpg", b"just some notes, not a photo\n" * 40, {}, 415),
        Payload(
            "svg",
            "logo.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            {},
            415,
        ),
        Payload("pdf", "doc.jpg", b"%PDF-1.4\n1 0 obj <<>> endobj\n%%EOF\n", {}, 415),
        Payload("truncated_jpeg", "cut.jpg", jpeg[: len(jpeg) // 3], {}, 415),
        Payload("empty", "empty.png", b"", {}, 415),
        Payload("pixel_bomb", "bomb.png", _png_header(100_000, 100_000), {}, 422),
        Payload("bad_top_k", "a.jpg", jpeg, {"top_k": "0"}, 400),
        Payload("empty_query", "a.jpg", jpeg, {"query": "   "}, 400),
        Payload("bad_aspect", "a.jpg", jpeg, {"aspect": "wide"}, 400),
        Payload(
            "too_large", "big.jpg", b"\xff\xd8\xff" + b"\0" * int(2.1 * UPLOAD_LIMIT_MB * 2**20), {}, 413
        ),
    ]
    return valid, hostile


# ----------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc (no psutil needed); 0 where /proc is missing."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class ServerProcess:
    def __init__(self, model: str, concurrency: int, queue: int, log_path: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
            "TOKENIZERS_PARALLELISM": "false",
            "CLIPCROP_MAX_CONCURRENCY": str(concurrency),
            "CLIPCROP_MAX_QUEUE": str(queue),
        }
        cmd = [
            sys.executable, "-m", "clipcrop.cli", "serve", "--port", str(self.port), "--model", model,
            "--max-upload-mb", str(UPLOAD_LIMIT_MB), "--log-level", "warning",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if httpx.get(self.base + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout:.0f} s:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


# ----------------------------------------------------------------------------------- checks
def check_answer(p: Payload, status: int, body: bytes, reference: dict | None) -> str | None:
    """None when the answer is right, else what is wrong."""
    if status != p.expect:
        return f"status {status}, expected {p.expect}: {body[:200]!r}"
    try:
        doc = json.loads(body)
    except ValueError:
        return "answer is not JSON"
    if not p.valid:
        err = doc.get("error") if isinstance(doc, dict) else None
        ok = (
            isinstance(err, dict) and isinstance(err.get("code"), str) and isinstance(err.get("message"), str)
        )
        return None if ok else f"error body of the wrong shape: {doc}"
    if doc.get("image") != p.filename or (doc.get("width"), doc.get("height")) != p.size:
        return f"wrong image/size: {doc.get('image')} {doc.get('width')}x{doc.get('height')}"
    if doc.get("query") != p.fields.get("query") or doc.get("error") is not None:
        return f"wrong query/error: {doc.get('query')!r} {doc.get('error')!r}"
    crops = doc.get("crops") or []
    if not 1 <= len(crops) <= TOP_K:  # fewer when crops coincide once fitted to the aspect ratio
        return f"{len(crops)} crops, expected 1 to {TOP_K}"
    scores = [c["score"] for c in crops]
    if scores != sorted(scores, reverse=True):
        return f"crops not ranked by score: {scores}"
    w, h = p.size
    for c in crops:
        x0, y0, x1, y1 = c["box"]
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and 0.0 <= c["score"] <= 1.0):
            return f"box outside the image: {c}"
        aspect = p.fields.get("aspect")
        if aspect:
            aw, ah = (float(v) for v in aspect.split(":"))
            if abs((x1 - x0) - (y1 - y0) * aw / ah) > aw / ah + 1:
                return f"box {c['box']} is not {aspect}"
    if reference is not None and [c["box"] for c in crops] != [c["box"] for c in reference["crops"]]:
        return f"crops differ from the reference answer: {crops} vs {reference['crops']}"
    return None


# ----------------------------------------------------------------------------------- run
@dataclass
class Report:
    requests: int = 0
    clients: int = 0
    seconds: float = 0.0
    throughput_rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    valid_p50_ms: float = 0.0
    valid_p99_ms: float = 0.0
    statuses: dict = field(default_factory=dict)
    server_errors: int = 0
    wrong: list = field(default_factory=list)
    transport_errors: list = field(default_factory=list)
    rss_start_mb: float = 0.0
    rss_warm_mb: float = 0.0
    rss_first_quarter_mb: float = 0.0
    rss_end_mb: float = 0.0

    @property
    def rss_growth(self) -> float:
        """Relative RSS growth from the end of the first quarter of traffic to the end."""
        q1 = self.rss_first_quarter_mb
        return (self.rss_end_mb - q1) / q1 if q1 else 0.0

    @property
    def ok(self) -> bool:
        return self.server_errors == 0 and not self.wrong and not self.transport_errors

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items()}
        out.update(rss_growth=round(self.rss_growth, 4), ok=self.ok)
        return out


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_load(
    model: str,
    *,
    clients: int = 8,
    requests: int = 400,
    hostile_every: int = 4,
    concurrency: int = 2,
    timeout: float = 300.0,
    log_path: Path | None = None,
) -> Report:
    valid, hostile = build_payloads()
    log_path = log_path or Path(f"/tmp/clipcrop-load-{os.getpid()}.log")
    server = ServerProcess(model, concurrency, queue=clients + 4, log_path=log_path)
    report = Report(requests=requests, clients=clients)
    try:
        server.wait_ready(timeout)
        report.rss_start_mb = rss_bytes(server.pid) / 2**20
        references: dict[str, dict] = {}
        with httpx.Client(base_url=server.base, timeout=timeout) as http:
            for p in valid + hostile:  # warm-up: every kind once; valid answers become references
                r = http.post("/v1/crop", files={"image": (p.filename, p.data)}, data=p.fields)
                problem = check_answer(p, r.status_code, r.content, None)
                if problem:
                    report.wrong.append(f"warm-up {p.name}: {problem}")
                elif p.valid:
                    references[p.name] = r.json()
        report.rss_warm_mb = rss_bytes(server.pid) / 2**20

        plan = [
            hostile[(i // hostile_every) % len(hostile)]
            if hostile_every and i % hostile_every == hostile_every - 1
            else valid[i % len(valid)]
            for i in range(requests)
        ]
        lock = threading.Lock()
        next_index = 0
        done = 0
        quarter = max(1, requests // 4)
        latencies: list[tuple[bool, float]] = []
        statuses: Counter = Counter()

        def worker() -> None:
            nonlocal next_index, done
            with httpx.Client(base_url=server.base, timeout=timeout) as http:
                while True:
                    with lock:
                        if next_index >= len(plan):
                            return
                        p = plan[next_index]
                        next_index += 1
                    t0 = time.perf_counter()
                    try:
                        r = http.post("/v1/crop", files={"image": (p.filename, p.data)}, data=p.fields)
                        status, content = r.status_code, r.content
                    except httpx.HTTPError as exc:
                        with lock:
                            report.transport_errors.append(f"{p.name}: {type(exc).__name__}: {exc}")
                            done += 1
                        continue
                    elapsed = time.perf_counter() - t0
                    problem = check_answer(p, status, content, references.get(p.name))
                    with lock:
                        statuses[status] += 1
                        latencies.append((p.valid, elapsed))
                        if problem:
                            report.wrong.append(f"{p.name}: {problem}")
                        done += 1
                        if done == quarter:
                            report.rss_first_quarter_mb = rss_bytes(server.pid) / 2**20

        t_start = time.perf_counter()
        threads = [threading.Thread(target=worker, name=f"client-{i}") for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report.seconds = time.perf_counter() - t_start
        report.rss_end_mb = rss_bytes(server.pid) / 2**20
        report.throughput_rps = requests / report.seconds if report.seconds else 0.0
        all_ms = [s * 1000 for _, s in latencies]
        valid_ms = [s * 1000 for v, s in latencies if v]
        report.p50_ms, report.p99_ms = _percentile(all_ms, 0.5), _percentile(all_ms, 0.99)
        report.valid_p50_ms, report.valid_p99_ms = _percentile(valid_ms, 0.5), _percentile(valid_ms, 0.99)
        report.statuses = dict(sorted(statuses.items()))
        report.server_errors = sum(n for s, n in statuses.items() if s >= 500)
        if "Traceback" in server.log_text():
            report.wrong.append(f"the server log holds a traceback (see {log_path})")
    finally:
        server.stop()
    return report


def print_report(report: Report, model: str) -> None:
    print(f"model {model}: {report.clients} clients, {report.requests} requests in {report.seconds:.1f} s")
    print(f"  throughput     {report.throughput_rps:8.2f} requests/s")
    print(f"  latency        p50 {report.p50_ms:8.1f} ms   p99 {report.p99_ms:8.1f} ms   (all requests)")
    print(
        f"                 p50 {report.valid_p50_ms:8.1f} ms   p99 {report.valid_p99_ms:8.1f} ms   (valid photos)"
    )
    print(f"  statuses       {', '.join(f'{s}: {n}' for s, n in report.statuses.items())}")
    print(
        f"  server RSS     start {report.rss_start_mb:.0f} MB, after warm-up {report.rss_warm_mb:.0f} MB, "
        f"after 1st quarter {report.rss_first_quarter_mb:.0f} MB, end {report.rss_end_mb:.0f} MB "
        f"({report.rss_growth:+.1%} since the 1st quarter)"
    )
    print(f"  5xx            {report.server_errors}")
    print(f"  wrong answers  {len(report.wrong)}")
    for line in report.wrong[:10]:
        print(f"    {line}")
    if report.transport_errors:
        print(f"  transport errors {len(report.transport_errors)}")
        for line in report.transport_errors[:10]:
            print(f"    {line}")
    print("OK" if report.ok else "FAILED")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model folder (or Hub id) for clipcrop serve")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--requests", type=int, default=400, help="requests in total (default 400)")
    ap.add_argument("--hostile-every", type=int, default=4, help="every N-th request is hostile (0: none)")
    ap.add_argument("--concurrency", type=int, default=2, help="CLIPCROP_MAX_CONCURRENCY of the server")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds for readiness and each request")
    ap.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    args = ap.parse_args(argv)
    if args.clients < 1 or args.requests < 1:
        ap.error("--clients and --requests must be at least 1")
    report = run_load(
        args.model,
        clients=args.clients,
        requests=args.requests,
        hostile_every=args.hostile_every,
        concurrency=args.concurrency,
        timeout=args.timeout,
    )
    print_report(report, args.model)
    if args.json:
        Path(args.json).write_text(json.dumps(report.as_dict(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
