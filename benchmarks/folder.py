"""Target 3: ``clipcrop crop`` over a folder of 32 real photos vs model load + 32 bare backbone calls.

    python benchmarks/folder.py --model DIR [--images 32] [--repeats 7]

Both sides run as fresh processes (interpreter start, imports, model load included), alternately.
The bare side loads ``OwlViTProcessor`` + ``OwlViTForObjectDetection`` and, per photo, opens it,
runs the processor and one forward with the query: the unavoidable work.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info, make_photo_set, median, print_table  # noqa: E402

BARE = """
import sys, torch
from pathlib import Path
from PIL import Image
from transformers import OwlViTForObjectDetection, OwlViTProcessor
model_dir, folder, query = sys.argv[1:4]
processor = OwlViTProcessor.from_pretrained(model_dir)
model = OwlViTForObjectDetection.from_pretrained(model_dir).eval()
with torch.no_grad():
    for path in sorted(Path(folder).glob("*.jpg")):
        image = Image.open(path).convert("RGB")
        model(**processor(text=[[query]], images=image, return_tensors="pt"))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--query", default="a person")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="clipcrop-folder-"))
    folder = tmp / "photos"
    make_photo_set(folder, args.images, long_side=1024)
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    cmds = {
        "bare": [sys.executable, "-c", BARE, args.model, str(folder), args.query],
        "clipcrop": [
            sys.executable,
            "-m",
            "clipcrop.cli",
            "crop",
            str(folder),
            "--query",
            args.query,
            "--json",
            "--model",
            args.model,
            "--quiet",
        ],
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for rep in range(args.repeats + 1):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                print(r.stderr[-2000:], file=sys.stderr)
                return 1
            if rep:  # first round is the warm-up (page cache)
                times[name].append(dt)
    b, c = median(times["bare"]), median(times["clipcrop"])
    print(f"machine: {machine_info()}")
    print(
        f"{args.images} real photos (long side 1024 px, JPEG), query {args.query!r}, {args.repeats} alternating runs"
    )
    print_table(
        "Target 3: folder of photos, whole process each",
        [
            ("model load + bare backbone calls", f"{b:.2f} s", "1.00x", ""),
            ("clipcrop crop FOLDER --json", f"{c:.2f} s", f"{c / b:.2f}x", "<= 1.15x"),
        ],
        ("run", "median", "ratio", "target"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
