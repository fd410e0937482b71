"""The shapes benchmark, end to end: does ClipCrop's decoder learn composition, and does
grounding generalise?

``python benchmarks/shapes/run.py [--small] [--seed N] [--set KEY=VALUE ...] [--validation-only] --out DIR``

No pretrained weights reach our machines, so with random backbones every query is noise. This
script builds a world small enough to learn on two CPU cores and runs the product's own code
paths on it:

1. generate scenes, detection labels, GAIC-format crops and queries
   (``benchmarks/shapes/generate.py`` -> ``DIR/data``). Crops are scored, and test boxes made, by
   the shapes world's own framing rule (:mod:`clipcrop.synthetic.framing_rule`: kind-dependent
   frame shape and coverage, lead room in front of triangles, headroom over stars), which
   training-free mode's generic composition ranking does not know. Five colour-shape pairs and
   two phrasings are held out of training;
2. ``finetune-backbone``: train a small OWL-ViT from scratch on the detection labels
   (-> ``DIR/owlvit-shapes``);
3. ``train``: ClipCrop's decoder on the GAIC-format crops (-> ``DIR/clipcrop-shapes``), validated at
   every epoch's end on the validation scenes' text queries; the best epoch (``best/``) is scored;
4. validation: every method on the validation scenes' text queries; ``oracle_centred``'s fill is
   chosen here. ``--validation-only`` stops here: settings (``--set``) are compared on these
   numbers, never on test ones;
5. test, once: ``evaluate --baselines`` on the held-out test scenes for text and image queries
   (:func:`clipcrop.evaluation.harness.evaluate_samples`), the no-condition ablation, the oracle
   rows, the seen/unseen split and the ambiguity check (``scoring.py``).

Methods: ``clipcrop`` (trained), ``clipcrop_no_condition`` (the same decoder with the condition
token replaced by its learned no-condition vector, ``b_u`` kept), ``training_free``,
``whole_image``, ``owlvit_top1``, ``union_box``, and the ceilings ``oracle_centred``,
``oracle_training_free``, ``oracle_query_blind`` (text only: image queries are one per scene).
It prints a table, then, as its last stdout line, the table as one JSON object::

    {"text": {method: {"iou_mean", "iou_max"}}, "image": {...}, "ambiguity": fraction,
     "ambiguity_training_free": fraction, "by_split": {split: {method: {"iou_mean", "n"}}},
     "minutes": m}

``by_split`` (text queries): ``seen``, ``unseen`` (a held-out pair or phrasing), and
``unseen_pair`` / ``unseen_template`` apart. ``ambiguity``: on scenes with two single-object
queries about different objects, the share where each query's top crop overlaps its own targets
more than the other query's. ``DIR/report.json`` adds the validation numbers, the settings, the
backbone's top-1 accuracy (seen and held-out pairs), the per-kind split and timings. Everything
is written under ``DIR`` and rebuilt by the script; checkpoints are not shipped anywhere.

Sizes (:class:`Profile`): the full run trains on 2000 scenes (4000 GAIC entries: two captions per
scene), an OWL-ViT of 160 px / patch 16 (100 tokens), 4 x 96 vision and 2 x 64 text layers, for
8000 fine-tuning steps of 16 images (half of them zoomed in), then a 3-layer, 96-wide decoder with
24 queries for 2000 steps of 16 (no mosaics), the epoch of best validation text IoU-Mean kept
(``keep_best``); it scores 60 validation and 120 test scenes, in about 30 minutes on two cores.
``--small`` is the CI configuration (tests/test_shapes.py): 400 training, 40 validation and 120
test scenes, 2500 fine-tuning steps at 2e-3 + 800 decoder steps, a 2-layer, 64-wide decoder,
about 12 minutes on two cores.
``--set`` overrides a :class:`Profile` field (``--set train_steps=1200``), for validation sweeps;
``--backbone DIR`` reuses a fine-tuned backbone of the same seed and profile (skips step 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

# Before torch is imported: OpenMP threads that spin while waiting make two busy processes on two
# cores five to ten times slower each (measured); passive waiting costs ~10% on a quiet machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import generate  # noqa: E402 - the sibling script
import scoring  # noqa: E402 - the sibling module

#: the product's methods: the model, its ablation, and evaluate --baselines' rows
MODEL_METHODS = (
    "clipcrop",
    "clipcrop_no_condition",
    "training_free",
    "whole_image",
    "owlvit_top1",
    "union_box",
)
ORACLES = ("oracle_centred", "oracle_training_free", "oracle_query_blind")
METHODS = MODEL_METHODS + ORACLES
SCENE_WH = (generate.SCENE_SIZE, generate.SCENE_SIZE)


@dataclass(frozen=True)
class Profile:
    """One benchmark configuration: data size, backbone shape, both training schedules."""

    train_scenes: int
    val_scenes: int
    test_scenes: int
    # the OWL-ViT trained from scratch
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    text_width: int
    text_layers: int
    # finetune-backbone
    ft_steps: int
    ft_batch: int
    ft_lr: float
    ft_warmup: int
    # train (the crop decoder)
    train_steps: int
    train_batch: int
    train_lr: float
    decoder: dict = field(default_factory=dict)
    text_drop: float = 0.1
    # chosen on validation (small, seed 0): IoU-Mean 0.485 without mosaics, 0.484 with, and the
    # decoder trains twice as fast without (single images' features are cached)
    mosaic: bool = False
    #: share of training scenes' second caption that names two objects; chosen on validation:
    #: small 0.534 (0.519 at 0.3, 0.526 at 0.7), full 0.645 (0.638 at 0.3)
    pair_prob: float = 0.5
    #: GAIC entries (subject + caption + crops) per training scene: more captions of the same
    #: pictures give the decoder more frames per kind without more backbone work
    subjects: int = 2
    #: detection labels also name each object's colour and shape apart ("a red shape", "a circle")
    attribute_names: bool = False
    #: keep the decoder of the epoch with the best text IoU-Mean on the validation scenes' queries
    #: (train's ``val_text`` / ``best/``), not the last one: the decoder's score varies by a few
    #: hundredths from epoch to epoch and seed to seed at these sizes
    keep_best: bool = True


FULL = Profile(
    train_scenes=2000,
    val_scenes=60,
    test_scenes=120,
    image_size=160,
    patch_size=16,
    vision_width=96,
    vision_layers=4,
    text_width=64,
    text_layers=2,
    # chosen on validation scenes (seed 0; README): 8000 steps (IoU-Mean 0.683 against 0.645 at 5000)
    ft_steps=8000,
    ft_batch=16,
    # 2e-3 (the small profile's) tried on validation: 0.688, within noise, and held-out pairs lower
    ft_lr=5e-4,
    ft_warmup=100,
    train_steps=2000,
    train_batch=16,
    train_lr=3e-4,
    decoder={
        "d_model": 96,
        "num_queries": 24,
        "num_layers": 3,
        "num_heads": 4,
        "ffn_dim": 192,
        "dropout": 0.0,
    },
)
#: the CI size: the same backbone shape, less data, shorter schedules, a smaller decoder
SMALL = replace(
    FULL,
    train_scenes=400,
    val_scenes=40,
    # as many test scenes as the full run: scoring them takes seconds, and the CI margins are
    # asserted on about 355 text queries instead of 119
    test_scenes=120,
    # chosen on validation scenes (README): 2500 backbone steps (seed 0: IoU-Mean 0.604 against
    # 0.534 at 1500 and 0.485 at 900; grounding is what the small size lacks most), at a
    # learning rate of 2e-3 (seeds 0/1/2 mean 0.586, against 0.577 at 1e-3 and 0.532 at 5e-4)
    ft_steps=2500,
    ft_lr=2e-3,
    ft_warmup=60,
    train_steps=800,
    train_lr=6e-4,
    decoder={
        "d_model": 64,
        "num_queries": 16,
        "num_layers": 2,
        "num_heads": 4,
        "ffn_dim": 128,
        "dropout": 0.0,
    },
)


def make_backbone(out: Path, tokenizer_dir: Path, p: Profile, seed: int) -> Path:
    """A randomly initialised OWL-ViT of the profile's shape, saved as an ordinary OWL-ViT folder
    (what ``clipcrop make-random-backbone`` writes, at a size between its ``tiny`` and ``small``)."""
    from clipcrop.synthetic.random_models import make_random_owlvit

    shape = {
        "image_size": p.image_size,
        "patch_size": p.patch_size,
        "v_hidden": p.vision_width,
        "v_layers": p.vision_layers,
        "v_heads": 4,
        "t_hidden": p.text_width,
        "t_layers": p.text_layers,
        "t_heads": 4,
        "projection_dim": p.text_width,
    }
    return make_random_owlvit(out, tokenizer_dir, size=shape, seed=seed)


def apply_overrides(profile: Profile, pairs: list[str]) -> Profile:
    """``--set KEY=VALUE`` overrides of :class:`Profile` fields (the value in the field's type;
    ``decoder.KEY=VALUE`` for the decoder's sizes). Raises ValueError naming a bad one."""
    changes: dict = {}
    decoder = dict(profile.decoder)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE")
        if key.startswith("decoder."):
            name = key.split(".", 1)[1]
            if name not in decoder:
                raise ValueError(f"--set {key}: the decoder has no {name!r}")
            decoder[name] = type(decoder[name])(value)
            continue
        if key not in Profile.__dataclass_fields__ or key == "decoder":
            raise ValueError(f"--set {key}: not a profile field")
        changes[key] = _typed(getattr(profile, key), value, key)
    return replace(profile, **changes, decoder=decoder)


def _typed(current, value: str, key: str):
    """``value`` in the type of ``current`` (bools as true/false)."""
    if isinstance(current, bool):
        if value.lower() not in ("true", "false"):
            raise ValueError(f"--set {key}: expected true or false, got {value!r}")
        return value.lower() == "true"
    return type(current)(value)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for data, checkpoints and report (rebuilt)")
    ap.add_argument("--small", action="store_true", help="the CI configuration (a few minutes)")
    ap.add_argument("--seed", type=int, default=0, help="world seed (scenes) and training seed")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a profile setting (validation sweeps), e.g. train_steps=1200; repeatable",
    )
    ap.add_argument(
        "--validation-only",
        action="store_true",
        help="stop after scoring the validation scenes: no test scene is evaluated",
    )
    ap.add_argument(
        "--backbone", metavar="DIR", help="reuse this fine-tuned backbone (same seed and profile)"
    )
    ap.add_argument(
        "--tokenizer", default=str(REPO / "tests" / "data"), help="folder with CLIP's vocab.json/merges.txt"
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress on stderr")
    args = ap.parse_args(argv)
    try:
        args.profile = apply_overrides(SMALL if args.small else FULL, args.overrides)
    except ValueError as exc:
        ap.error(str(exc))
    return args


def finetune_stage(args: argparse.Namespace, data: Path, out: Path) -> tuple[Path, dict]:
    """Step 2: OWL-ViT from scratch through finetune-backbone (or ``--backbone``); its top-1 hit
    rates on the validation objects, seen pairs and held-out pairs apart."""
    from clipcrop.data.detection import load_detection_manifest
    from clipcrop.evaluation.detection import top1_box_iou
    from clipcrop.modeling.backbone import Backbone
    from clipcrop.training.finetune import finetune_backbone
    from clipcrop.training.finetune_config import FinetuneConfig

    profile = args.profile
    init = make_backbone(out / "owlvit-init", Path(args.tokenizer), profile, args.seed)
    backbone_dir = Path(args.backbone) if args.backbone else out / "owlvit-shapes"
    if not args.backbone:
        finetune_backbone(
            FinetuneConfig(
                data=str(data / "detection" / "train.jsonl"),
                backbone=str(init),
                out_dir=str(backbone_dir),
                max_steps=profile.ft_steps,
                batch_size=profile.ft_batch,
                lr=profile.ft_lr,
                warmup_steps=profile.ft_warmup,
                num_negatives=32,
                zoom=0.5,
                overwrite=True,
                seed=args.seed,
                device="cpu",
                progress=False,
            )
        )
    trained = Backbone.from_pretrained(backbone_dir)
    top1 = {
        "untrained": top1_box_iou(
            Backbone.from_pretrained(init), load_detection_manifest(data / "detection" / "val.jsonl")
        ),
        "trained": top1_box_iou(trained, load_detection_manifest(data / "detection" / "val.jsonl")),
    }
    unseen = data / "detection" / "val_unseen.jsonl"
    if unseen.stat().st_size:
        top1["trained_unseen_pairs"] = top1_box_iou(trained, load_detection_manifest(unseen))
    return backbone_dir, top1


def train_stage(args: argparse.Namespace, data: Path, backbone_dir: Path, model_dir: Path) -> Path:
    """Step 3: the crop decoder on the GAIC-format crops, validated at every epoch's end on the
    validation scenes' text queries; returns the checkpoint to score: ``best/`` (the epoch of
    best text IoU-Mean there) with ``keep_best``, else the last."""
    from clipcrop.training.config import TrainConfig
    from clipcrop.training.trainer import train

    profile = args.profile
    train(
        TrainConfig(
            gaic_root=str(data / "gaic"),
            text_annotations=str(data / "gaic_text"),
            backbone=str(backbone_dir),
            out_dir=str(model_dir),
            max_steps=profile.train_steps,
            batch_size=profile.train_batch,
            lr=profile.train_lr,
            warmup_steps=50,
            mosaic=profile.mosaic,
            text_drop=profile.text_drop,
            decoder=dict(profile.decoder),
            device="cpu",
            overwrite=True,
            seed=args.seed,
            progress=False,
            val_text=str(data / "val_text_queries.json"),
            best_metric="text_iou_mean",
        )
    )
    return model_dir / "best" if profile.keep_best else model_dir


def no_condition_tops(cc, samples) -> list[list[float]]:
    """``clipcrop_no_condition``: the trained decoder's top crop with the condition token replaced
    by its no-condition vector, ``b_u`` (the condition's union box) kept."""
    from clipcrop.evaluation.harness import TEXTCROP_TOP_K

    tops = []
    for sample in samples:
        encoded = cc.encode(sample.image_path)
        image_query = str(sample.image_query_path) if sample.image_query_path is not None else None
        condition = cc.prepare_condition(None if image_query else sample.query, image_query)
        result = cc.crop_encoded(encoded, condition, top_k=TEXTCROP_TOP_K, condition_token=False)
        tops.append(list(result[0].box))
    return tops


def score_manifest(cc, data: Path, manifest: str, centred_fill: float | None, out: Path) -> tuple[dict, list]:
    """Every method's top crop per entry of ``manifest``: evaluate --baselines (the product's
    path), the ablation and the oracle rows. ``centred_fill`` None: choose it here (validation).

    Returns (method -> top crops, entries); writes ``out`` (predictions, JSON lines)."""
    from clipcrop.data.datasets import load_textcrop
    from clipcrop.evaluation.harness import evaluate_samples, write_jsonl_atomic

    entries = json.loads((data / manifest).read_text())
    samples = load_textcrop(data, data / manifest)
    result = evaluate_samples(cc, samples, "textcrop", baselines=True)
    write_jsonl_atomic(out, result.predictions)
    records = sorted(result.predictions, key=lambda r: r["index"])
    tops: dict[str, list] = {"clipcrop": [r["crops"][0]["box"] for r in records]}
    tops["clipcrop_no_condition"] = no_condition_tops(cc, samples)
    for name in ("training_free", "whole_image", "owlvit_top1", "union_box"):
        tops[name] = [r["baselines"][name][0] for r in records]
    fill = centred_fill if centred_fill is not None else scoring.best_centred_fill(entries, SCENE_WH)[0]
    tops["oracle_centred"] = scoring.oracle_centred(entries, fill, SCENE_WH)
    tops["oracle_training_free"] = scoring.oracle_training_free(entries, SCENE_WH)
    if not any(e.get("image_query") for e in entries):
        tops["oracle_query_blind"] = scoring.oracle_query_blind(entries, SCENE_WH)
    return tops, entries


def summary(tops: dict, entries: list) -> dict:
    """The numbers of one query set: table, by_split, by_kind and both ambiguities."""
    amb, n = scoring.ambiguity(tops["clipcrop"], entries)
    amb_free, _ = scoring.ambiguity(tops["training_free"], entries)
    amb_blind, _ = scoring.ambiguity(tops["clipcrop_no_condition"], entries)
    return {
        "table": scoring.method_table(tops, entries),
        "by_split": scoring.by_split(tops, entries),
        "by_kind": scoring.by_kind(tops, entries),
        "ambiguity": round(amb, 4),
        "ambiguity_training_free": round(amb_free, 4),
        "ambiguity_no_condition": round(amb_blind, 4),
        "ambiguity_scenes": n,
    }


def _scored_checkpoint(folder: Path) -> dict:
    """The scored decoder's folder (relative to the run) and training step."""
    from clipcrop.training.checkpoints import checkpoint_step

    return {"folder": f"{folder.parent.name}/{folder.name}", "step": checkpoint_step(folder)}


def validate_stage(cc, data: Path, out: Path) -> dict:
    """Step 4: every method on the validation scenes' text queries; ``oracle_centred``'s fill."""
    entries = json.loads((data / "val_text_queries.json").read_text())
    fill, fills = scoring.best_centred_fill(entries, SCENE_WH)
    tops, entries = score_manifest(
        cc, data, "val_text_queries.json", fill, out / "predictions_val_text.jsonl"
    )
    return summary(tops, entries) | {"oracle_centred_fill": fill, "oracle_centred_fills_tried": fills}


def test_stage(cc, data: Path, out: Path, fill: float) -> tuple[dict, dict]:
    """Step 5, once: text and image queries of the test scenes."""
    text = summary(*score_manifest(cc, data, "text_queries.json", fill, out / "predictions_text.jsonl"))
    if not json.loads((data / "image_queries.json").read_text()):  # a tiny world: no donor scene
        return text, {"table": {}, "by_split": {}, "by_kind": {}}
    image = summary(*score_manifest(cc, data, "image_queries.json", fill, out / "predictions_image.jsonl"))
    return text, image


def print_table(text: dict, image: dict | None) -> None:
    """The human-readable table (stdout)."""
    head = ("text IoU-Mean", "text IoU-Max", "image IoU-Mean", "seen", "unseen")
    print(f"{'method':<24}" + "".join(f"{h:>15}" for h in head))
    for m in METHODS:
        row = text["table"].get(m, {})
        img = (image or {}).get("table", {}).get(m, {})
        cells = [
            row.get("iou_mean"),
            row.get("iou_max"),
            img.get("iou_mean"),
            text["by_split"].get("seen", {}).get(m, {}).get("iou_mean"),
            text["by_split"].get("unseen", {}).get(m, {}).get("iou_mean"),
        ]
        print(f"{m:<24}" + "".join(f"{'-' if c is None else f'{c:.3f}':>15}" for c in cells))
    print(
        f"ambiguity: ClipCrop {text['ambiguity']:.3f}, training-free {text['ambiguity_training_free']:.3f}, "
        f"no condition {text['ambiguity_no_condition']:.3f} of {text['ambiguity_scenes']} scenes"
    )


def write_test_report(
    out: Path, text: dict, image: dict, report: dict, timings: dict, minutes: float
) -> None:
    """``report.json`` (the stdout line's keys first, then the rest), the table, the JSON line."""
    line = {
        "text": text["table"],
        "image": image["table"],
        "ambiguity": text["ambiguity"],
        "ambiguity_training_free": text["ambiguity_training_free"],
        "by_split": text["by_split"],
        "minutes": minutes,
    }
    extra = {
        "ambiguity_scenes": text["ambiguity_scenes"],
        "ambiguity_no_condition": text["ambiguity_no_condition"],
        "by_kind": {"text": text["by_kind"], "image": image["by_kind"]},
        "by_split_image": image["by_split"],
        "seconds": timings,
    }
    (out / "report.json").write_text(json.dumps(line | extra | report, indent=1) + "\n")
    print_table(text, image)
    hits = {k: v.get("hit_rate") for k, v in report["backbone_top1_val"].items()}
    print(f"backbone top-1 hit rate (val): {json.dumps(hits)}; {minutes} min")
    print(json.dumps(line))


def _quiet_environment(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    _quiet_environment(args.verbose)
    profile = args.profile
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str, t0: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - t0, 1)
        print(
            f"[{(now - t_start) / 60:5.1f} min] {name} done in {now - t0:.0f} s", file=sys.stderr, flush=True
        )
        return now

    t = time.perf_counter()
    data = out / "data"
    meta = generate.generate(
        data,
        seed=args.seed,
        train=profile.train_scenes,
        val=profile.val_scenes,
        test=profile.test_scenes,
        pair_prob=profile.pair_prob,
        subjects=profile.subjects,
        attribute_names=profile.attribute_names,
    )
    t = stage("generate", t)
    backbone_dir, backbone_top1 = finetune_stage(args, data, out)
    t = stage("finetune-backbone", t)
    model_dir = out / "clipcrop-shapes"
    scored_dir = train_stage(args, data, backbone_dir, model_dir)
    t = stage("train", t)

    from clipcrop.predictor import ClipCrop

    cc = ClipCrop.from_pretrained(scored_dir)
    validation = validate_stage(cc, data, out)
    t = stage("validate", t)
    report = {
        "validation": validation,
        "backbone_top1_val": backbone_top1,
        "profile": "small" if args.small else "full",
        "overrides": list(args.overrides),
        "settings": asdict(profile),
        "data": meta,
        "threads": __import__("torch").get_num_threads(),
        "decoder_checkpoint": _scored_checkpoint(scored_dir),
    }
    if args.validation_only:
        report |= {"minutes": round((time.perf_counter() - t_start) / 60, 1), "seconds": timings}
        (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        print_table(validation, None)
        print(json.dumps({"validation": {k: validation[k] for k in ("table", "by_split", "ambiguity")}}))
        return 0
    text, image = test_stage(cc, data, out, validation["oracle_centred_fill"])
    t = stage("test", t)
    write_test_report(out, text, image, report, timings, round((time.perf_counter() - t_start) / 60, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
