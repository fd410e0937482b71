"""What media pipelines ask of a cropper (#16), through the surfaces that write files: faces kept
whole on real photos, text to avoid, several ratios from one backbone pass through the CLI,
exact output sizes in the pictures written, overlays that draw priors, and the CLI and batch
giving the library's results for the same options. (The options' parsing and the library's
grouping are tested in tests/test_crop_options.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePath

import numpy as np
import pytest
from conftest import sample_photo
from PIL import Image
from test_cli_outputs import check_no_torch, error_lines, run_cli
from test_metadata import assert_carried, tagged_photo

from clipcrop.crop_options import Prior
from clipcrop.io.output_names import crop_path, crop_paths, output_stems, planned_crop_paths
from clipcrop.io.render import PRIOR_COLORS, at_output_size, draw_overlay, overlay_labels
from clipcrop.modeling.priors import TOUCH, WHOLE, share_inside
from clipcrop.ops.label_layout import overlaps

RATIOS = ["1:1", "4:5", "16:9"]
PHOTOS = ["astronaut.png", "grace_hopper.jpg"]


def ratio_of(label: str) -> float:
    w, h = label.split(":")
    return float(w) / float(h)


def assert_exact_ratio(box, label: str) -> None:
    """The box has the ratio to the pixel: some 1 px change of width or height makes it exact."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    r = ratio_of(label)
    assert min(abs(w - h * r), abs(h - w / r)) <= 1.0, (box, label)


def shares(crops, prior: Prior) -> list[float]:
    return [float(v) for v in share_inside(np.array([c.box for c in crops], dtype=float), prior)]


# ---------------------------------------------------------------------------------- faces
@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("fixture", ["tiny_cc", "tiny_free_cc"])
def test_faces_are_kept_whole_in_every_crop_of_every_ratio(fixture, photo, request):
    """faces=True: the cascade's face is a prior, and every crop of 1:1, 4:5 and 16:9 holds it
    whole; the same call without faces cuts it in at least one crop (so this can fail)."""
    cc = request.getfixturevalue(fixture)
    path = sample_photo(photo)
    with_faces = cc.crop(path, aspect_ratio=RATIOS, faces=True, top_k=5)
    faces = [p for p in with_faces.priors if p.kind == "face"]
    assert len(faces) == 1, with_faces.priors
    face = faces[0]
    assert (face.box[2] - face.box[0]) * (
        face.box[3] - face.box[1]
    ) > 0.02 * with_faces.width * with_faces.height
    without = cc.crop(path, aspect_ratio=RATIOS, top_k=5)
    cut_somewhere = False
    for label in RATIOS:
        group = with_faces.for_aspect(label)
        assert len(group) >= 3, (label, len(group))
        assert all(s >= WHOLE for s in shares(group, face)), (label, shares(group, face))
        # whole: what priors.WHOLE means (98 % of its area inside: the rounding slack of a detector box)
        for c in group:
            assert_exact_ratio(c.box, label)
        cut_somewhere |= any(s < WHOLE for s in shares(without.for_aspect(label), face))
    assert cut_somewhere, "without faces every crop holds the face already: the test proves nothing"
    assert without.priors == []
    assert with_faces.to_dict()["priors"] == [
        {"box": [round(v, 2) for v in face.box], "kind": "face", "weight": 1.0}
    ]


# ---------------------------------------------------------------------------------- avoid
def ratio_room(width: int, height: int, regions: list[tuple], ratio: float, min_side: int) -> bool:
    """Whether a crop of ``ratio`` at least ``min_side`` pixels a side fits beside every region
    (in one of the strips left, right, above or below their union)."""
    x0 = min(r[0] for r in regions)
    y0 = min(r[1] for r in regions)
    x1 = max(r[2] for r in regions)
    y1 = max(r[3] for r in regions)
    for w, h in ((x0, height), (width - x1, height), (width, y0), (width, height - y1)):
        cw = min(w, h * ratio)
        if cw >= min_side and cw / ratio >= min_side:
            return True
    return False


@pytest.mark.parametrize(("photo", "text"), [("astronaut.png", "a rocket"), ("grace_hopper.jpg", "a face")])
@pytest.mark.parametrize("fixture", ["tiny_cc", "tiny_free_cc"])
def test_avoid_text_leaves_the_detected_region_out_of_the_top_crop(fixture, photo, text, request):
    cc = request.getfixturevalue(fixture)
    path = sample_photo(photo)
    threshold = float(cc.selection_settings["object_threshold"])
    assert cc.detect(path, text, top_k=1).detections[0].score >= threshold  # a real detection
    changed = 0
    for label in RATIOS:
        plain = cc.crop(path, aspect_ratio=label, top_k=5)
        avoided = cc.crop(path, aspect_ratio=label, top_k=5, avoid=[text])
        regions = [p for p in avoided.priors if p.kind == "avoid"]
        assert regions and all(p.source == f"text: {text}" for p in regions)
        side = max(cc.min_crop_side, int(np.sqrt(cc.min_crop_area * avoided.width * avoided.height)))
        if ratio_room(avoided.width, avoided.height, [p.box for p in regions], ratio_of(label), side):
            top = avoided[0]
            assert all(shares([top], p)[0] <= TOUCH for p in regions), (label, top.box)
        changed += [c.box for c in plain] != [c.box for c in avoided]
        assert_exact_ratio(avoided[0].box, label)
    assert changed >= 2, "avoid changed no ranking"


# ---------------------------------------------------------------------------------- names
def test_names_with_several_ratios_carry_the_ratio_and_never_meet_one_ratio_names():
    out = Path("/out")
    stem = PurePath("a/x")
    assert crop_path(out, stem, 2, aspect="4:5", several=True) == out / "a/x_4x5-crop2.jpg"
    assert crop_path(out, stem, 2, aspect="4:5") == out / "a/x_crop2.jpg"  # one ratio: as before
    assert crop_paths(out, stem, ["1:1", "1:1", "16:9"], several=True) == [
        out / "a/x_1x1-crop1.jpg",
        out / "a/x_1x1-crop2.jpg",
        out / "a/x_16x9-crop1.jpg",
    ]
    # an image called x_1x1 next to x: its one-ratio names and x's several-ratio names differ
    s1, s2 = output_stems(["/p/x_1x1.jpg", "/p/x.jpg"], [None, None])
    single = set(planned_crop_paths(out, s1, [None], 3))
    several = set(planned_crop_paths(out, s2, ["1:1", "4:5"], 3))
    assert len(single) == 3 and len(several) == 6 and not single & several


# ---------------------------------------------------------------------------------- pictures
def test_output_size_resamples_exactly_with_lanczos():
    img = Image.open(sample_photo("astronaut.png")).convert("RGB")
    small = at_output_size(img, (100, 80))
    assert small.size == (100, 80)
    assert np.array_equal(np.asarray(small), np.asarray(img.resize((100, 80), Image.Resampling.LANCZOS)))
    assert at_output_size(img, None) is img and at_output_size(img, img.size) is img


def test_overlay_draws_priors_dashed_with_labels_that_never_collide():
    img = Image.new("RGB", (400, 300), "white")
    crops = [(10, 10, 300, 250), (12, 12, 280, 240), (50, 40, 390, 290)]
    priors = [
        Prior((20.0, 15.0, 120.0, 110.0), "face"),
        Prior((200.0, 150.0, 380.0, 280.0), "avoid"),
        Prior((15.0, 12.0, 100.0, 100.0), "keep"),
    ]
    names = ["1:1 #1", "1:1 #2", "4:5 #1"]
    labels = overlay_labels(img.size, crops, img.size, [0.9, 0.8, 0.7], names=names, priors=priors)
    assert [t for t, _ in labels] == ["1:1 #1: 0.90", "1:1 #2: 0.80", "4:5 #1: 0.70", "face", "avoid", "keep"]
    rects = [r for _, r in labels]
    assert not any(overlaps(a, b) for i, a in enumerate(rects) for b in rects[i + 1 :])
    assert all(0 <= r[0] and 0 <= r[1] and r[2] <= 400 and r[3] <= 300 for r in rects)
    out = np.asarray(draw_overlay(img, crops, img.size, [0.9, 0.8, 0.7], names=names, priors=priors))
    # the avoid box's bottom edge (y = 279) is dashed in its colour: some of it painted, some not
    red = np.array(Image.new("RGB", (1, 1), PRIOR_COLORS["avoid"]).getpixel((0, 0)))
    edge = out[279, 200:380]
    painted = (np.abs(edge.astype(int) - red).sum(axis=1) < 30).mean()
    assert 0.3 < painted < 0.8, painted


# ---------------------------------------------------------------------------------- CLI
def cli_json(r) -> list[dict]:
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_cli_several_ratios_one_backbone_pass_groups_and_names(
    tiny_clipcrop_dir, tmp_path, monkeypatch, capsys
):
    """In-process: one backbone call per image for three ratios; each group its ratio, in the
    order given, top_k each; the files name the ratio; the JSON equals the library's."""
    from clipcrop import ClipCrop
    from clipcrop.cli.main import main
    from clipcrop.modeling.backbone import Backbone

    photo = tmp_path / "g.jpg"
    shutil.copy(sample_photo("grace_hopper.jpg"), photo)
    calls = []
    encode = Backbone.encode
    monkeypatch.setattr(Backbone, "encode", lambda self, *a, **k: calls.append(1) or encode(self, *a, **k))
    out = tmp_path / "out"
    args = ["crop", str(photo), "--model", str(tiny_clipcrop_dir), "--aspect", "16:9,1:1,4:5", "-k", "3"]
    assert main([*args, "--json", "--quiet", "--out", str(out), "--faces"]) == 0
    assert len(calls) == 1
    got = json.loads(capsys.readouterr().out)
    assert [c["aspect"] for c in got["crops"]] == ["16:9"] * 3 + ["1:1"] * 3 + ["4:5"] * 3
    for c in got["crops"]:
        assert_exact_ratio(c["box"], c["aspect"])
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"g_{t}-crop{k}.jpg" for t in ("16x9", "1x1", "4x5") for k in (1, 2, 3))
    for c, path in zip(
        got["crops"], crop_paths(out, PurePath("g"), [c["aspect"] for c in got["crops"]], True), strict=True
    ):
        x0, y0, x1, y1 = c["box"]
        assert Image.open(path).size == (x1 - x0, y1 - y0)
    want = ClipCrop.from_pretrained(tiny_clipcrop_dir).crop(
        photo, aspect_ratio=["16:9", "1:1", "4:5"], top_k=3, faces=True
    )
    assert got["crops"] == want.to_dict()["crops"] and got["priors"] == want.to_dict()["priors"]


def test_cli_size_files_are_exact_and_never_enlarged_unless_asked(tiny_backbone_dir, tiny_free_cc, tmp_path):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(tagged_photo("jpg", size=(480, 360)))
    model = ["--model", str(tiny_backbone_dir), "--json", "-k", "2"]
    down = tmp_path / "down"
    lines = cli_json(run_cli("crop", str(photo), *model, "--size", "120x150", "--out", str(down)))
    want = tiny_free_cc.crop(photo, top_k=2, size="120x150").to_dict()
    assert lines[0]["crops"] == want["crops"]
    for k, c in enumerate(lines[0]["crops"], start=1):
        assert c["aspect"] == "120:150" and c["output_size"] == [120, 150]
        picture = Image.open(down / f"p_crop{k}.jpg")
        assert picture.size == (120, 150)
        assert_carried(picture)  # profile and EXIF (its sizes the picture's) as for full-size crops
    # larger than any crop of a 480x360 photo: scaled down to fit the crop, not enlarged
    big = tmp_path / "big"
    lines = cli_json(run_cli("crop", str(photo), *model, "--size", "1000x1250", "--out", str(big)))
    for k, c in enumerate(lines[0]["crops"], start=1):
        x0, y0, x1, y1 = c["box"]
        size = Image.open(big / f"p_crop{k}.jpg").size
        assert size == tuple(c["output_size"]) and size[0] <= x1 - x0 and size[1] <= y1 - y0
        assert abs(size[0] / size[1] - 0.8) < 0.01
    up = tmp_path / "up"
    lines = cli_json(
        run_cli("crop", str(photo), *model, "--size", "1000x1250", "--upscale", "--out", str(up))
    )
    assert all(Image.open(up / f"p_crop{k}.jpg").size == (1000, 1250) for k in (1, 2))


def test_cli_keep_avoid_and_overlay_equal_the_library(tiny_clipcrop_dir, tiny_cc, tmp_path):
    photo = tmp_path / "a.png"
    shutil.copy(sample_photo("astronaut.png"), photo)
    out = tmp_path / "out"
    r = run_cli(
        "crop", str(photo), "--model", str(tiny_clipcrop_dir), "--json", "-k", "3",
        "--aspect", "4:5", "--keep", "300,50,420,160,2", "--avoid-box", "0,300,120,512",
        "--avoid", "a rocket", "--out", str(out), "--overlay",
    )  # fmt: skip
    got = cli_json(r)[0]
    want = tiny_cc.crop(
        photo,
        aspect_ratio="4:5",
        top_k=3,
        keep=["300,50,420,160,2"],
        avoid_box=["0,300,120,512"],
        avoid=["a rocket"],
    ).to_dict()
    assert got["crops"] == want["crops"] and got["priors"] == want["priors"]
    kinds = [p["kind"] for p in got["priors"]]
    assert kinds[0] == "keep" and kinds[1:] == ["avoid"] * (len(kinds) - 1) and len(kinds) >= 3
    assert got["priors"][0] == {"box": [300.0, 50.0, 420.0, 160.0], "kind": "keep", "weight": 2.0}
    assert sorted(p.name for p in out.iterdir()) == [
        "a_crop1.jpg",
        "a_crop2.jpg",
        "a_crop3.jpg",
        "a_overlay.jpg",
    ]
    overlay = np.asarray(Image.open(out / "a_overlay.jpg").convert("RGB")).astype(int)
    green = np.array([0x30, 0xD1, 0x58])
    assert (np.abs(overlay[50:53, 300:420] - green).sum(axis=2) < 60).any()  # the keep box's top edge


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--size", "0x5"], "size"),
        (["--size", "1080x1350", "--aspect", "1:1,4:5"], "several aspect ratios"),
        (["--size", "1080x1350", "--aspect", "16:9"], "does not have the aspect ratio 16:9"),
        (["--aspect", "1:1,1:1"], "given twice"),
        (["--aspect", "1:1,0:3"], "aspect"),
        (["--keep", "1,2,3"], "keep box '1,2,3'"),
        (["--avoid-box", "5,5,1,1"], "x1 > x0"),
        (["--keep", "0,0,9,9,-1"], "weight must be positive"),
        (["--avoid", "  "], "avoid text must not be empty"),
    ],
)
def test_cli_bad_option_values_are_usage_errors_before_torch(tiny_backbone_dir, tmp_path, extra, needle):
    photo = tmp_path / "p.png"
    shutil.copy(sample_photo("coffee.png"), photo)
    r = check_no_torch(["crop", str(photo), "--model", str(tiny_backbone_dir), *extra], tmp_path)
    assert r.returncode == 2, r.stderr
    lines = error_lines(r)
    assert len(lines) == 1 and lines[0].startswith("clipcrop: error:") and needle in lines[0], lines


def test_cli_existing_ratio_pictures_are_refused_before_the_model(tiny_backbone_dir, tmp_path):
    photo = tmp_path / "p.png"
    shutil.copy(sample_photo("coffee.png"), photo)
    out = tmp_path / "out"
    out.mkdir()
    (out / "p_4x5-crop2.jpg").write_bytes(b"precious")
    r = check_no_torch(
        [
            "crop",
            str(photo),
            "--model",
            str(tiny_backbone_dir),
            "--aspect",
            "1:1,4:5",
            "-k",
            "2",
            "--out",
            str(out),
        ],
        tmp_path,
    )
    assert r.returncode == 2 and "p_4x5-crop2.jpg already exists" in r.stderr, r.stderr
    assert (out / "p_4x5-crop2.jpg").read_bytes() == b"precious"


# ---------------------------------------------------------------------------------- batch
@pytest.fixture(scope="module")
def ray_session():
    import logging

    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
    )
    yield
    ray.shutdown()


def test_batch_manifest_options_per_line_equal_the_library(ray_session, tiny_clipcrop_dir, tiny_cc, tmp_path):
    """Job options (--aspect with two ratios, --faces), lines that replace them (a ratio list,
    size as text or [W, H], faces false, keep as numbers, avoid as text), bad values as those
    lines' errors; results equal ClipCrop.crop with the same options, the pictures are named per
    ratio and exactly their output_size, and a re-run finds every line done."""
    from clipcrop.batch.config import BatchConfig
    from clipcrop.batch.driver import run_batch

    shutil.copy(sample_photo("grace_hopper.jpg"), tmp_path / "g.jpg")
    shutil.copy(sample_photo("astronaut.png"), tmp_path / "a.png")
    rows = [
        {"image": "g.jpg"},
        {"image": "g.jpg", "aspect": ["16:9"], "size": "320x180", "faces": False},
        {
            "image": "a.png",
            "keep": [[300, 50, 420, 160, 2]],
            "avoid": "a rocket",
            "aspect": "4:5",
            "size": [200, 250],
        },
        {"image": "a.png", "avoid_text": "a rocket"},
        {"image": "a.png", "size": "12x"},
        {"image": "a.png", "faces": "yes"},
        {"image": "a.png", "keep": "1,2,3"},
        {"image": "a.png", "size": "100x100"},  # with the job's two ratios: contradicts them
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    crops = tmp_path / "crops"
    config = BatchConfig(
        input=str(manifest), out=str(tmp_path / "r.jsonl"), model=str(tiny_clipcrop_dir), top_k=2,
        aspect_ratio="1:1,4:5", faces=True, crops_out=str(crops), device="cpu",
    )  # fmt: skip
    summary = run_batch(config)
    assert (summary.done, summary.failed) == (3, 5)
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    errors = sorted(d["error"] for d in lines if d["error"])
    for needle, message in zip(
        [
            'unknown key "avoid_text"',
            "WIDTHxHEIGHT",
            "faces must be true or false",
            "keep box",
            "several aspect",
        ],
        errors,
        strict=True,
    ):
        assert needle in message and str(manifest) in message, (needle, message)
    ok = {(Path(d["image"]).name, json.dumps(d["aspect"])): d for d in lines if not d["error"]}
    wanted = {
        ("g.jpg", '"1:1,4:5"'): ({"aspect_ratio": "1:1,4:5", "faces": True}, {"faces": True}),
        ("g.jpg", '["16:9"]'): ({"aspect_ratio": ["16:9"], "size": "320x180"}, {"size": "320x180"}),
        ("a.png", '"4:5"'): (
            {"aspect_ratio": "4:5", "size": (200, 250), "faces": True, "keep": ["300,50,420,160,2"], "avoid": ["a rocket"]},
            {"size": "200x250", "keep": ["300,50,420,160,2"], "avoid": ["a rocket"], "faces": True},
        ),
    }  # fmt: skip
    assert set(ok) == set(wanted)
    for key, (kwargs, recorded) in wanted.items():
        d = ok[key]
        want = tiny_cc.crop(tmp_path / key[0], top_k=2, **kwargs).to_dict()
        assert d["crops"] == want["crops"] and d["priors"] == want["priors"], key
        assert d["options"] == recorded
        several = "," in key[1]
        assert len(d["crop_files"]) == len(d["crops"])
        for c, path in zip(d["crops"], d["crop_files"], strict=True):
            assert ("-crop" in Path(path).name) == several
            if several:
                assert f"_{c['aspect'].replace(':', 'x')}-crop" in Path(path).name
            x0, y0, x1, y1 = c["box"]
            assert Image.open(path).size == tuple(c.get("output_size") or (x1 - x0, y1 - y0))
    assert ok[("g.jpg", '["16:9"]')]["crops"][0]["output_size"] == [320, 180]
    assert any(p["kind"] == "face" for p in ok[("g.jpg", '"1:1,4:5"')]["priors"])
    assert not any(p["kind"] == "face" for p in ok[("g.jpg", '["16:9"]')]["priors"])  # faces: false
    assert run_batch(config).skipped == len(rows)  # resumed: every line found by its options


def test_batch_cli_flags_become_the_config_and_bad_ones_are_usage_errors(
    tiny_clipcrop_dir, tmp_path, monkeypatch
):
    from clipcrop.batch import driver
    from clipcrop.batch.config import BatchSummary
    from clipcrop.cli.main import main

    shutil.copy(sample_photo("coffee.png"), tmp_path / "c.png")
    seen = []
    monkeypatch.setattr(driver, "run_batch", lambda config: seen.append(config) or BatchSummary())
    base = [
        "batch",
        str(tmp_path / "c.png"),
        "--out",
        str(tmp_path / "r.jsonl"),
        "--model",
        str(tiny_clipcrop_dir),
    ]
    flags = ["--aspect", "1:1,4:5", "--keep", "1,2,30,40", "--keep", "5,5,9,9,3", "--avoid-box", "0,0,4,4"]
    flags += ["--avoid", "a logo", "--faces"]
    assert main([*base, *flags]) == 0
    (config,) = seen
    assert (config.aspect_ratio, config.keep, config.avoid_box, config.avoid, config.faces) == (
        "1:1,4:5", ["1,2,30,40", "5,5,9,9,3"], ["0,0,4,4"], ["a logo"], True
    )  # fmt: skip
    assert main([*base, "--size", "640x480", "--upscale"]) == 0
    assert (seen[1].size, seen[1].upscale) == ("640x480", True)
    r = check_no_torch([*base, "--size", "640x480", "--aspect", "1:1,4:5"], tmp_path)
    assert r.returncode == 2 and error_lines(r) == [
        "clipcrop: error: size gives one output shape; it cannot go with several aspect ratios"
    ], r.stderr
    assert not (tmp_path / "r.jsonl").exists()


# ---------------------------------------------------------------------------------- scripts
ROOT = Path(__file__).resolve().parents[1]


def test_readme_picture_script_draws_the_ratios_and_the_face(tiny_backbone_dir, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "pic.png"
    cmd = [sys.executable, str(ROOT / "scripts" / "readme_picture.py"), "--model", str(tiny_backbone_dir)]
    r = subprocess.run(
        [*cmd, "--out", str(out), "--width", "300"], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert [line.split(": [")[0] for line in r.stdout.splitlines()[:3]] == ["1:1 #1", "4:5 #1", "16:9 #1"]
    assert "'kind': 'face'" in r.stdout
    picture = Image.open(out)
    assert picture.format == "PNG" and picture.width == 300 and out.stat().st_size < 200_000
    rgb = np.asarray(picture.convert("RGB")).astype(int)
    face = np.array(Image.new("RGB", (1, 1), PRIOR_COLORS["face"]).getpixel((0, 0)))
    exact = np.abs(rgb - face).sum(axis=2) < 5  # the palette keeps the overlay's colours exactly
    assert exact.sum() > 100  # the dashed face outline and its label


def test_pipeline_benchmark_prints_every_row(tiny_backbone_dir):
    import subprocess
    import sys

    cmd = [sys.executable, str(ROOT / "benchmarks" / "pipeline.py"), "--model", str(tiny_backbone_dir)]
    r = subprocess.run([*cmd, "--repeats", "1", "--top-k", "2"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for row in ("1 ratio + faces", "5 ratios, one call", "3 ratios, 3 calls", "enc.crop 3 ratios"):
        rows = [line for line in r.stdout.splitlines() if line.startswith(row + " ")]
        assert len(rows) == 2, row  # trained and training-free tables
    assert "faces found: 1" in r.stdout
