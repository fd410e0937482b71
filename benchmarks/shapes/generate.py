"""Write the shapes grounding benchmark's data: detection labels, GAIC-format crops, queries.

``python benchmarks/shapes/generate.py --out DATA [--seed N] [--train N] [--val N] [--test N]``

Scenes come from :mod:`clipcrop.synthetic.shapes` (re-exported here), scene ``i`` of world ``seed`` being
``make_scene(i, seed)``: train scenes are ``0 .. train-1``, then val, then test. Layout of ``DATA``::

    scenes/{train,val,test}/sNNNNN.jpg         the scene images
    detection/{train,val}.jsonl                 finetune-backbone manifests: every object, its text
                                                (val: seen pairs only)
    detection/val_unseen.jsonl                  the val scenes' held-out pairs, to score the backbone
    gaic/images/{train,val,test}/sNNNNN_k.jpg   GAICD layout (hard links to the scene images), one
    gaic/annotations/{split}/sNNNNN_k.txt       file per (scene, subject): "y1 x1 y2 x2 MOS" lines
    gaic_text/{train,valid,test}.json           file name -> caption naming the subject
    text_queries.json                           test scenes: text queries + human-like target crops
    val_text_queries.json                       val scenes: the same, to choose settings on
    image_queries.json                          test scenes: a crop of another test scene as query
    queries/qNNNNN.jpg                          the query images
    meta.json                                   settings and counts
    .shapes-data                                marks the folder as this generator's (see generate())

Held out: training scenes never hold a :data:`~clipcrop.synthetic.shapes.HELD_OUT_PAIRS` pair, so
no training caption or detection label names one; val and test scenes draw from all pairs, and
their single-object queries prefer pairs with a held-out object when the scene has one. Training
captions and detection labels use the templates "the X" / "a X" (detection also "X"); a share
(``unseen_template``) of val and test queries use :data:`HELD_OUT_TEMPLATES` instead. Every query
says which it is: ``unseen_pair``, ``unseen_template`` and ``split`` (``unseen`` when either holds,
else ``seen``), and carries the true ``subject_box`` and ``other_boxes`` (xyxy pixels) for the
benchmark's oracle rows.

Train scenes carry ``subjects`` GAIC entries each (the same picture with different captions and
crops: the strongest signal that the crop must follow the text); a subject is one object, or two
(``pair_prob``). Object texts in the detection manifests vary their article ("a red circle",
"the red circle", "red circle"), as queries do. Text queries per test scene: two single-object
queries whose best crops overlap little (:func:`clipcrop.synthetic.shapes.distinct_pair`, the ambiguity
check's pair) and one two-object query. Manifest entries carry extra keys ``scene``, ``kind``
(``single``/``pair``/``image``), ``objects`` and the ones above, which
:func:`clipcrop.data.datasets.load_textcrop` ignores. Target crops come from the framing rule
(:mod:`clipcrop.synthetic.framing_rule`), as do the GAIC MOS.
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
    HELD_OUT_PAIRS,
    SCENE_SIZE,
    SHAPES,
    Scene,
    backgrounds_available,
    describe,
    distinct_pair,
    gaic_annotation,
    make_scene,
    target_crops,
)

SPLITS = ("train", "val", "test")
CAPTION_FILE = {"train": "train", "val": "valid", "test": "test"}
ARTICLES = ("a", "the", "")
#: phrasings never used in a training caption or detection label ({} is "the red circle")
HELD_OUT_TEMPLATES = ("find {}", "zoom in on {}")
#: share of val/test text queries phrased with a held-out template
UNSEEN_TEMPLATE_SHARE = 0.3
JPEG_QUALITY = 92


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


#: the file that marks a folder as this generator's output, written before anything else
MARKER = ".shapes-data"


def _clear_earlier(out: Path) -> None:
    """Remove an earlier data set at ``out``; refuse a folder this generator did not write."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not (out / MARKER).is_file():
        raise FileExistsError(f"{out} is not empty and holds no earlier shapes data set ({MARKER})")
    shutil.rmtree(out)


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


def _detection_entry(
    scene: Scene, split: str, name: str, rng: np.random.Generator, keep, attribute_names: bool
) -> dict:
    """One finetune-backbone manifest line: the scene's objects that ``keep`` accepts, their texts
    and, with ``attribute_names``, their colour and shape apart as ``other_texts`` ("a red
    shape", "a circle"): names that every object of that colour, or that shape, shares."""
    objects = []
    for o in scene.objects:
        if keep(o):
            entry = {
                "box": [round(float(v), 2) for v in o.box],
                "text": o.text(ARTICLES[int(rng.integers(3))]),
            }
            if attribute_names:
                entry["other_texts"] = [f"a {o.colour} shape", f"a {o.shape}"]
            objects.append(entry)
    return {"image": f"../scenes/{split}/{name}.jpg", "objects": objects}


def _write_gaic_entry(out: Path, split: str, entry: str, image_path: Path, boxes, mos) -> None:
    _link_or_copy(image_path, out / "gaic" / "images" / split / f"{entry}.jpg")
    lines = [f"{b[1]:.0f} {b[0]:.0f} {b[3]:.0f} {b[2]:.0f} {m:.2f}" for b, m in zip(boxes, mos, strict=True)]
    (out / "gaic" / "annotations" / split / f"{entry}.txt").write_text("\n".join(lines) + "\n")


def _write_split(
    out: Path,
    split: str,
    indices: range,
    seed: int,
    subjects: int,
    pair_prob: float,
    n_best: int,
    n_rest: int,
    attribute_names: bool = False,
) -> tuple[list[Scene], dict[str, str]]:
    """Scenes, detection manifests and GAIC entries of one split; returns the scenes (val and
    test only: their queries need them) and the split's captions."""
    for folder in ("scenes", "gaic/images", "gaic/annotations"):
        (out / folder / split).mkdir(parents=True, exist_ok=True)
    kept: list[Scene] = []
    captions: dict[str, str] = {}
    detection, unseen = [], []
    for index in indices:
        scene = make_scene(index, seed, held_out=split != "train")
        if split != "train":
            kept.append(scene)
        rng = np.random.default_rng([seed, index, 11])
        name = f"s{index:05d}"
        image_path = out / "scenes" / split / f"{name}.jpg"
        scene.image.save(image_path, quality=JPEG_QUALITY)
        detection.append(_detection_entry(scene, split, name, rng, lambda o: not o.held_out, attribute_names))
        unseen.append(_detection_entry(scene, split, name, rng, lambda o: o.held_out, attribute_names))
        for k, subject in enumerate(_subjects(scene, rng, subjects if split == "train" else 1, pair_prob)):
            boxes, mos = gaic_annotation(scene, subject, rng, n_best=n_best, n_rest=n_rest)
            _write_gaic_entry(out, split, f"{name}_{k}", image_path, boxes, mos)
            captions[f"{name}_{k}.jpg"] = describe(scene, subject, ("the", "a")[int(rng.integers(2))])
    if split != "test":
        (out / "detection").mkdir(parents=True, exist_ok=True)
        (out / "detection" / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in detection))
    if split == "val":
        lines = [d for d in unseen if d["objects"]]
        (out / "detection" / "val_unseen.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    return kept, captions


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
    attribute_names: bool = False,
) -> dict:
    """Write the benchmark data to ``out`` (see the module docstring); returns ``meta.json``'s content.

    ``out`` must be missing, empty, or an earlier data set of this generator (finished or not:
    it holds :data:`MARKER`), which is replaced whole: entries of an earlier run with other
    settings must not mix into this one's splits. Anything else raises :class:`FileExistsError`.
    """
    out = Path(out)
    _clear_earlier(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by benchmarks/shapes/generate.py; replaced whole on the next run\n")
    counts = {"train": train, "val": val, "test": test}
    starts = {"train": 0, "val": train, "test": train + val}
    scenes: dict[str, list[Scene]] = {}
    captions: dict[str, dict[str, str]] = {}
    for split in SPLITS:
        indices = range(starts[split], starts[split] + counts[split])
        scenes[split], captions[split] = _write_split(
            out, split, indices, seed, subjects, pair_prob, n_best, n_rest, attribute_names
        )
        _write_json(out / "gaic_text" / f"{CAPTION_FILE[split]}.json", captions[split])
    (out / "queries").mkdir(parents=True, exist_ok=True)
    val_text = _text_queries(scenes["val"], seed, "val")
    text_queries = _text_queries(scenes["test"], seed, "test")
    image_queries = _image_queries(out, scenes["test"], seed)
    _write_json(out / "val_text_queries.json", val_text)
    _write_json(out / "text_queries.json", text_queries)
    _write_json(out / "image_queries.json", image_queries)
    meta = {
        "seed": seed,
        "scenes": counts,
        "gaic_entries": {s: len(captions[s]) for s in SPLITS},
        "text_queries": len(text_queries),
        "image_queries": len(image_queries),
        "val_text_queries": len(val_text),
        "unseen_text_queries": {
            "pair": sum(q["unseen_pair"] for q in text_queries),
            "template": sum(q["unseen_template"] for q in text_queries),
            "either": sum(q["split"] == "unseen" for q in text_queries),
        },
        "held_out_pairs": [" ".join(p) for p in HELD_OUT_PAIRS],
        "held_out_templates": list(HELD_OUT_TEMPLATES),
        "real_backgrounds": backgrounds_available(),
        "subjects_per_train_scene": subjects,
        "pair_prob": pair_prob,
        "attribute_names": attribute_names,
    }
    _write_json(out / "meta.json", meta)
    return meta


def _query_entry(scene: Scene, indices: list[int], kind: str, image: str) -> dict:
    """The manifest fields every query carries (targets, scene, objects, split, oracle geometry)."""
    unseen_pair = any(scene.objects[i].held_out for i in indices)
    return {
        "image": image,
        "boxes": target_crops(scene, indices).tolist(),
        "scene": scene.index,
        "kind": kind,
        "objects": [scene.objects[i].name for i in indices],
        "unseen_pair": unseen_pair,
        "subject_box": [round(float(v), 2) for v in scene.subject_box(indices)],
        "other_boxes": scene.others(indices).round(2).tolist(),
    }


def _phrase(scene: Scene, indices: list[int], rng: np.random.Generator) -> tuple[str, bool]:
    """A query's text and whether its phrasing is held out (:data:`HELD_OUT_TEMPLATES`)."""
    if rng.random() < UNSEEN_TEMPLATE_SHARE:
        template = HELD_OUT_TEMPLATES[int(rng.integers(len(HELD_OUT_TEMPLATES)))]
        return template.format(describe(scene, indices, "the")), True
    return describe(scene, indices, ("the", "a")[int(rng.integers(2))]), False


def _text_queries(scenes: list[Scene], seed: int, split: str) -> list[dict]:
    """Per scene: two single-object queries about objects whose frames differ, one two-object query."""
    out: list[dict] = []
    for scene in scenes:
        rng = np.random.default_rng([seed, scene.index, 13])
        image = f"scenes/{split}/s{scene.index:05d}.jpg"
        pair = distinct_pair(scene, rng, prefer_held_out=True)
        singles = [[i] for i in pair] if pair is not None else [[int(rng.integers(len(scene.objects)))]]
        two = sorted(int(i) for i in rng.choice(len(scene.objects), size=2, replace=False))
        for indices, kind in [(s, "single") for s in singles] + [(two, "pair")]:
            query, unseen_template = _phrase(scene, indices, rng)
            entry = _query_entry(scene, indices, kind, image)
            entry |= {"query": query, "unseen_template": unseen_template}
            entry["split"] = "unseen" if entry["unseen_pair"] or unseen_template else "seen"
            out.append(entry)
    return out


def _image_queries(out: Path, test: list[Scene], seed: int) -> list[dict]:
    """Per test scene: one object, queried by a crop of the same kind of object in another scene."""
    by_name: dict[str, list[tuple[int, int]]] = {}
    for si, scene in enumerate(test):
        for oi, obj in enumerate(scene.objects):
            by_name.setdefault(obj.name, []).append((si, oi))
    image_q: list[dict] = []
    for si, scene in enumerate(test):
        rng = np.random.default_rng([seed, scene.index, 17])
        for i in [int(j) for j in rng.permutation(len(scene.objects))]:
            donors = [d for d in by_name[scene.objects[i].name] if d[0] != si]
            if not donors:
                continue
            dsi, doi = donors[int(rng.integers(len(donors)))]
            donor = test[dsi]
            qpath = out / "queries" / f"q{scene.index:05d}.jpg"
            donor.image.crop(_query_crop(donor, doi, rng)).save(qpath, quality=JPEG_QUALITY)
            entry = _query_entry(scene, [i], "image", f"scenes/test/s{scene.index:05d}.jpg")
            entry |= {"image_query": f"queries/{qpath.name}", "query_from": donor.index}
            entry["split"] = "unseen" if entry["unseen_pair"] else "seen"
            image_q.append(entry)
            break
    return image_q


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
