"""Target 4: peak memory.

    python benchmarks/memory.py --model DIR

1. Peak RSS of ``clipcrop crop PHOTO --query ...`` vs a script that only loads the same OWL-ViT
   and runs one forward (each in a fresh process; ``ru_maxrss`` of the child).
2. Decoding a 40-megapixel JPEG vs a 4-megapixel one through ClipCrop's loader (JPEG draft
   reduction): peak RSS of a process that decodes one of them.

Peaks are the child's ``VmHWM`` (``/proc/self/status``), which starts afresh at ``exec``; the
``ru_maxrss`` of a child can carry the parent's high-water mark across ``fork``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info, make_photo_set, print_table  # noqa: E402

HWM = """
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
"""
BARE = (
    HWM
    + """
import sys, torch
from PIL import Image
from transformers import OwlViTForObjectDetection, OwlViTProcessor
model_dir, photo, query = sys.argv[1:4]
processor = OwlViTProcessor.from_pretrained(model_dir)
model = OwlViTForObjectDetection.from_pretrained(model_dir).eval()
with torch.no_grad():
    model(**processor(text=[[query]], images=Image.open(photo).convert("RGB"), return_tensors="pt"))
print(hwm())
"""
)
CLI = (
    HWM
    + """
import sys
from clipcrop.cli.main import main
rc = main(sys.argv[1:])
print(hwm(), file=sys.stderr)
sys.exit(rc)
"""
)
DECODE = (
    HWM
    + """
import sys
from clipcrop.io.images import load_image
li = load_image(sys.argv[1])
print(hwm(), li.image.size, li.width, li.height)
"""
)


def child_rss(cmd: list[str], env: dict, from_stderr: bool = False) -> tuple[int, str]:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    text = (r.stderr if from_stderr else r.stdout).strip().splitlines()[-1]
    return int(text.split()[0]), text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--query", default="a person")
    args = ap.parse_args()
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    tmp = Path(tempfile.mkdtemp(prefix="clipcrop-mem-"))
    photo = make_photo_set(tmp / "p", 1, long_side=1024)[0]
    bare_kb, _ = child_rss([sys.executable, "-c", BARE, args.model, str(photo), args.query], env)
    cli_kb, _ = child_rss(
        [
            sys.executable,
            "-c",
            CLI,
            "crop",
            str(photo),
            "--query",
            args.query,
            "--json",
            "--model",
            args.model,
        ],
        env,
        from_stderr=True,
    )
    print(f"machine: {machine_info()}")
    print_table(
        "Target 4a: peak RSS, one photo",
        [
            ("load OWL-ViT + one forward", f"{bare_kb / 1024:.0f} MiB", "1.00x", ""),
            (
                "clipcrop crop PHOTO --query",
                f"{cli_kb / 1024:.0f} MiB",
                f"{cli_kb / bare_kb:.2f}x",
                "<= 1.30x",
            ),
        ],
        ("process", "peak RSS", "ratio", "target"),
    )

    from PIL import Image

    src = Image.open(photo).convert("RGB")
    rows = []
    sizes = {"4 MP (2449x1633)": (2449, 1633), "40 MP (7746x5164)": (7746, 5164)}
    base_kb = child_rss(
        [sys.executable, "-c", HWM + "from clipcrop.io.images import load_image\nprint(hwm())"], env
    )[0]
    results, decoded = {}, {}
    for label, size in sizes.items():
        path = tmp / f"{size[0]}x{size[1]}.jpg"
        src.resize(size, Image.BILINEAR).save(path, quality=85)
        kb, text = child_rss([sys.executable, "-c", DECODE, str(path)], env)
        results[label] = kb - base_kb
        decoded[label] = tuple(int(v) for v in text.split("(")[1].split(")")[0].split(","))
        rows.append(
            (
                label,
                f"{path.stat().st_size / 1e6:.1f} MB",
                f"{(kb - base_kb) / 1024:.0f} MiB",
                text.split(" ", 1)[1],
            )
        )
    print_table(
        "Target 4b: peak RSS of decoding (above an interpreter with clipcrop.io.images imported)",
        rows,
        ("image", "file", "decode peak", "decoded size, original w, h"),
    )
    a, b = results.values()
    decoded_w, decoded_h = decoded["40 MP (7746x5164)"]
    decoded_kb = decoded_w * decoded_h * 3 / 1024
    print(
        f"target: 40 MP peak <= 4 MP peak + the 40 MP photo's decoded bytes: {b / 1024:.0f} MiB <= "
        f"{a / 1024:.0f} + {decoded_kb / 1024:.0f} MiB -> {'met' if b <= a + decoded_kb else 'MISSED'} "
        f"(a full 40 MP RGB decode alone would be {7746 * 5164 * 3 / 2**20:.0f} MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
