"""The golden outputs of the seeded calibrated tiny checkpoints on three real photos.

``python tests/golden.py`` rewrites ``tests/data/golden/outputs.json``; ``tests/test_golden.py``
compares today's outputs with it, so drift in preprocessing, box decoding, selection or
post-processing fails loudly. Regenerate only for a change that is meant to move the numbers,
and say so in the commit.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
GOLDEN = HERE / "data" / "golden" / "outputs.json"
PHOTOS = ("astronaut.png", "coffee.png", "grace_hopper.jpg")
QUERIES = ("a human face", "a cup of coffee on a table")


def compute(backbone_dir: Path, clipcrop_dir: Path) -> dict:
    """Detections, union boxes and crops of both modes, per photo (plain JSON)."""
    from conftest import sample_photo

    from clipcrop import ClipCrop

    free, trained = ClipCrop.from_pretrained(backbone_dir), ClipCrop.from_pretrained(clipcrop_dir)
    query_image = str(sample_photo("chelsea.png"))
    out: dict = {}
    for name in PHOTOS:
        photo = sample_photo(name)
        entry: dict = {"detections": {}, "crops": {}}
        for query in QUERIES:
            entry["detections"][query] = free.detect(photo, query=query, top_k=5).to_dict()["detections"]
        entry["detections"]["image query"] = free.detect(photo, image_query=query_image, top_k=3).to_dict()[
            "detections"
        ]
        for mode, cc in (("training-free", free), ("trained", trained)):
            for label, kwargs in (
                ("text", {"query": QUERIES[0]}),
                ("image", {"image_query": query_image}),
                ("none", {}),
                ("text 4:5", {"query": QUERIES[1], "aspect_ratio": "4:5"}),
            ):
                result = cc.crop(photo, top_k=4, **kwargs).to_dict(extended=True)
                entry["crops"][f"{mode} {label}"] = {
                    "union_box": result["union_box"],
                    "keywords": result["keywords"],
                    "crops": result["crops"],
                }
        out[name] = entry
    return out


def main() -> int:
    sys.path.insert(0, str(HERE))
    from conftest import DATA, build_tiny_clipcrop

    from clipcrop.synthetic.random_models import make_random_owlvit

    with tempfile.TemporaryDirectory() as tmp:
        backbone = make_random_owlvit(Path(tmp) / "owlvit-tiny", DATA, size="tiny", seed=0, calibrate=True)
        clipcrop = build_tiny_clipcrop(backbone, Path(tmp) / "clipcrop-tiny")
        outputs = compute(backbone, clipcrop)
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n")
    print(GOLDEN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
