"""Write the shapes grounding benchmark's data: detection labels, GAIC-format crops, queries.

``python benchmarks/shapes/generate.py --out DATA [--seed N] [--train N] [--val N] [--test N]``

Scenes come from :mod:`clipcrop.synthetic.shapes` (re-exported here), scene ``i`` of world ``seed`` being
``make_scene(i, seed)``: train scenes are ``0 .. train-1``, then val, then test. Layout of ``DATA``::

    scenes/{train,val,test}/sNNNNN.jpg         the scene images
    detection/{train,val}.jsonl                 finetune-backbone manifests: every object, its text
    gaic/images/{train,val,test}/sNNNNN_k.jpg   GAICD layout (hard links to the scene images), one
    gaic/annotations/{split}/sNNNNN_k.txt       file per (scene, subject): "y1 x1 y2 x2 MOS" lines
    gaic_text/{train,valid,test}.json           file name -> caption naming the subject
    text_queries.json                           test scenes: text queries + human-like target crops
    image_queries.json                          test scenes: a crop of another test scene as query
    queries/qNNNNN.jpg                          the query images
    meta.json                                   settings and counts

Train scenes carry ``subjects`` GAIC entries each (the same picture with different captions and
crops: the strongest signal that the crop must follow the text); a subject is one object, or two
(``pair_prob``). Object texts in the detection manifests vary their article ("a red circle",
"the red circle", "red circle"), as queries do. Text queries per test scene: two single-object
queries whose best crops overlap little (:func:`clipcrop.synthetic.shapes.distinct_pair`, the ambiguity
check's pair) and one two-object query. Manifest entries carry extra keys ``scene``, ``kind``
(``single``/``pair``/``image``) and ``objects``, which :func:`clipcrop.data.datasets.load_textcrop` ignores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from clipcrop.synthetic.shapes import (  # noqa: F401 - re-exported: the generator lives in the package
    COLOURS,
    SHAPES,
    Scene,
    backgrounds_available,
    crop_quality,
    describe,
    distinct_pair,
    gaic_annotation,
    make_scene,
    target_crops,
)

SPLITS = ("train", "val", "test")
CAPTION_FILE = {"train": "train", "val": "valid", "test": "test"}
ARTICLES = ("a", "the", "")
JPEG_QUALITY = 92


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _subjects(scene: Scene, rng: np.random.Generator, count: int, pair_prob: float) -> list[list[int]]:
    """``count`` different subjects of a scene: single objects, or pairs with ``pair_prob``."""
    n = len(scene.objects)
    out: list[list[int]] = []
    singles = [int(i) for i in rng.permutation(n)]
    for k in range(count):
        if n >= 2 and k > 0 and rng.random() < pair_prob:
            subject = sorted(int(i) for i in rng.choice(n, size=2, replace=False))
        else:
            subject = [singles[k % n]]
        if subject not in out:
            out.append(subject)
    return out


def _query_crop(scene: Scene, index: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A loose crop around object ``index`` (15-30% margins, jittered) for an image query."""
    x0, y0, x1, y1 = scene.objects[index].box
    w, h = x1 - x0, y1 - y0
    m = rng.uniform(0.15, 0.3, size=4) * [w, h, w, h]
    box = [x0 - m[0], y0 - m[1], x1 + m[2], y1 + m[3]]
    return (
        int(max(0, round(box[0]))),
        int(max(0, round(box[1]))),
        int(min(scene.width, round(box[2]))),
        int(min(scene.height, round(box[3]))),
    )


def generate(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    train: int = 1200,
    val: int = 60,
    test: int = 120,
    subjects: int = 2,
    pair_prob: float = 0.3,
    n_best: int = 8,
    n_rest: int = 56,
) -> dict:
    """Write the benchmark data to ``out`` (see the module docstring); returns ``meta.json``'s content."""
    out = Path(out)
    counts = {"train": train, "val": val, "test": test}
    starts = {"train": 0, "val": train, "test": train + val}
    test_scenes: list[Scene] = []  # the queries need them again; train/val scenes are written and dropped
    captions: dict[str, dict[str, str]] = {s: {} for s in SPLITS}
    for split in SPLITS:
        (out / "scenes" / split).mkdir(parents=True, exist_ok=True)
        (out / "gaic" / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "gaic" / "annotations" / split).mkdir(parents=True, exist_ok=True)
        detection = []
        for index in range(starts[split], starts[split] + counts[split]):
            scene = make_scene(index, seed)
            if split == "test":
                test_scenes.append(scene)
            rng = np.random.default_rng([seed, index, 11])
            name = f"s{index:05d}"
            image_path = out / "scenes" / split / f"{name}.jpg"
            scene.image.save(image_path, quality=JPEG_QUALITY)
            detection.append(
                {
                    "image": f"../scenes/{split}/{name}.jpg",
                    "objects": [
                        {"box": [round(v, 2) for v in o.box], "text": o.text(ARTICLES[int(rng.integers(3))])}
                        for o in scene.objects
                    ],
                }
            )
            for k, subject in enumerate(
                _subjects(scene, rng, subjects if split == "train" else 1, pair_prob)
            ):
                entry = f"{name}_{k}"
                _link_or_copy(image_path, out / "gaic" / "images" / split / f"{entry}.jpg")
                boxes, mos = gaic_annotation(scene, subject, rng, n_best=n_best, n_rest=n_rest)
                lines = [
                    f"{b[1]:.0f} {b[0]:.0f} {b[3]:.0f} {b[2]:.0f} {m:.2f}"
                    for b, m in zip(boxes, mos, strict=True)
                ]
                (out / "gaic" / "annotations" / split / f"{entry}.txt").write_text("\n".join(lines) + "\n")
                captions[split][f"{entry}.jpg"] = describe(scene, subject, ("the", "a")[int(rng.integers(2))])
        if split != "test":
            (out / "detection").mkdir(parents=True, exist_ok=True)
            (out / "detection" / f"{split}.jsonl").write_text(
                "".join(json.dumps(d) + "\n" for d in detection)
            )
    for split in SPLITS:
        _write_json(out / "gaic_text" / f"{CAPTION_FILE[split]}.json", captions[split])

    text_queries, image_queries = _queries(out, test_scenes, seed)
    _write_json(out / "text_queries.json", text_queries)
    _write_json(out / "image_queries.json", image_queries)
    meta = {
        "seed": seed,
        "scenes": counts,
        "gaic_entries": {s: len(captions[s]) for s in SPLITS},
        "text_queries": len(text_queries),
        "image_queries": len(image_queries),
        "real_backgrounds": backgrounds_available(),
        "subjects_per_train_scene": subjects,
        "pair_prob": pair_prob,
    }
    _write_json(out / "meta.json", meta)
    return meta


def _queries(out: Path, test: list[Scene], seed: int) -> tuple[list[dict], list[dict]]:
    (out / "queries").mkdir(parents=True, exist_ok=True)
    by_name: dict[str, list[tuple[int, int]]] = {}
    for si, scene in enumerate(test):
        for oi, obj in enumerate(scene.objects):
            by_name.setdefault(obj.name, []).append((si, oi))
    text_q: list[dict] = []
    image_q: list[dict] = []
    for si, scene in enumerate(test):
        rng = np.random.default_rng([seed, scene.index, 13])
        image = f"scenes/test/s{scene.index:05d}.jpg"
        pair = distinct_pair(scene, rng)
        singles = list(pair) if pair is not None else [int(rng.integers(len(scene.objects)))]
        for i in singles:
            text_q.append(
                {
                    "image": image,
                    "query": describe(scene, [i], ("the", "a")[int(rng.integers(2))]),
                    "boxes": target_crops(scene, [i]).tolist(),
                    "scene": scene.index,
                    "kind": "single",
                    "objects": [scene.objects[i].name],
                }
            )
        two = sorted(int(i) for i in rng.choice(len(scene.objects), size=2, replace=False))
        text_q.append(
            {
                "image": image,
                "query": describe(scene, two, ("the", "a")[int(rng.integers(2))]),
                "boxes": target_crops(scene, two).tolist(),
                "scene": scene.index,
                "kind": "pair",
                "objects": [scene.objects[i].name for i in two],
            }
        )
        # image query: the same kind of object, cut out of another test scene
        for i in singles + [int(j) for j in rng.permutation(len(scene.objects))]:
            donors = [d for d in by_name[scene.objects[i].name] if d[0] != si]
            if donors:
                dsi, doi = donors[int(rng.integers(len(donors)))]
                donor = test[dsi]
                qpath = out / "queries" / f"q{scene.index:05d}.jpg"
                donor.image.crop(_query_crop(donor, doi, rng)).save(qpath, quality=JPEG_QUALITY)
                image_q.append(
                    {
                        "image": image,
                        "image_query": f"queries/{qpath.name}",
                        "boxes": target_crops(scene, [i]).tolist(),
                        "scene": scene.index,
                        "kind": "image",
                        "objects": [scene.objects[i].name],
                        "query_from": donor.index,
                    }
                )
                break
    return text_q, image_q


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder to write the data set to")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=1200, help="training scenes")
    p.add_argument("--val", type=int, default=60)
    p.add_argument("--test", type=int, default=120, help="held-out scenes for the queries")
    p.add_argument("--subjects", type=int, default=2, help="GAIC entries (captions) per training scene")
    args = p.parse_args(argv)
    meta = generate(
        args.out, seed=args.seed, train=args.train, val=args.val, test=args.test, subjects=args.subjects
    )
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
