"""``clipcrop batch`` on Ray Data: real photos, manifests, kill -9 and resume, parity with ``crop --json``.

One local Ray session is shared by the in-process runs (module scope); the CLI runs either join it
(``--ray-address``) or, for the interruption test, start their own local Ray as a user's run does.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import sample_photo
from PIL import Image

pytest.importorskip("ray.data")

from clipcrop.batch.config import BatchConfig  # noqa: E402
from clipcrop.batch.driver import run_batch  # noqa: E402
from clipcrop.batch.ray_pool import MAX_TASKS_PER_ACTOR, MIN_BLOCK_ROWS  # noqa: E402

PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png"]


def cli_env(**extra: str) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}


def read_results(path: Path) -> list[dict]:
    data = path.read_text(encoding="utf-8")
    assert data == "" or data.endswith("\n"), "results file ends in a partial line"
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("batch-photos")
    (d / "more").mkdir()
    for i, name in enumerate(PHOTOS):
        shutil.copy(sample_photo(name), (d / "more" if i % 2 else d) / name)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (d / "readme.txt").write_text("not an image, not an input")
    return d


def assert_same_crops(got: dict, want: dict) -> None:
    assert (got["image"], got["width"], got["height"], got["query"]) == (
        want["image"],
        want["width"],
        want["height"],
        want["query"],
    )
    assert got["error"] is None and want["error"] is None
    assert [c["box"] for c in got["crops"]] == [c["box"] for c in want["crops"]]
    assert [c["score"] for c in got["crops"]] == pytest.approx([c["score"] for c in want["crops"]], abs=1e-4)


def test_worker_keeps_names_opens_paths_and_caches_conditions(tiny_backbone_dir, tmp_path):
    """The Ray UDF on its own: names vs. paths, per-input errors, conditions prepared once."""
    import numpy as np

    from clipcrop.batch.worker import CropWorker
    from clipcrop.limits import Limits

    shutil.copy(sample_photo("astronaut.png"), tmp_path / "a.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    worker = CropWorker(str(tiny_backbone_dir), "cpu", "fp32", None, Limits(), 3, None)
    prepared = []
    real_prepare = worker.cc.prepare_condition
    worker.cc.prepare_condition = lambda *a: prepared.append(a) or real_prepare(*a)
    items = [
        ("shown/a.png", "a woman", None),
        ("shown/c.png", None, "shown/a.png"),
        ("shown/broken.jpg", "x", None),
    ]
    paths = [(str(tmp_path / "a.png"), None), (str(tmp_path / "a.png"), str(tmp_path / "a.png"))]
    paths.append((str(tmp_path / "broken.jpg"), None))
    for _ in range(2):
        out = worker.crop_items(items, paths)
        assert [d["image"] for d in out] == ["shown/a.png", "shown/c.png", "shown/broken.jpg"]
        assert out[0]["error"] is None and len(out[0]["crops"]) == 3 and out[0]["query"] == "a woman"
        assert out[1]["image_query"] == "shown/a.png" and out[1]["query"] is None and out[1]["crops"]
        assert out[2]["crops"] == [] and out[2]["error"].startswith("shown/broken.jpg")
    assert len(prepared) == 3  # once per condition, not once per input
    batch = {
        "item": np.array([json.dumps(list(it)) for it in items], dtype=object),
        "paths": np.array([json.dumps(list(p)) for p in paths], dtype=object),
    }
    rows = worker(batch)
    assert list(rows["failed"]) == [False, False, True]
    assert [json.loads(k) for k in rows["key"]] == [list(it) for it in items]
    assert [json.loads(x) for x in rows["line"]] == out


def test_worker_leaves_the_process_settings_as_they_were(tiny_backbone_dir, tmp_path):
    """A worker built in the caller's process (not a Ray actor) puts back what it changes while
    loading and working: environment variables, torch's threads, the libraries' log levels."""
    import numpy as np
    import torch

    from clipcrop.batch.worker import TRACE_ENV, CropWorker
    from clipcrop.limits import Limits

    shutil.copy(sample_photo("coffee.png"), tmp_path / "c.png")
    trace = tmp_path / "trace.jsonl"
    threads = torch.get_num_threads()
    hf_log = logging.getLogger("transformers")
    hf_level = hf_log.level
    assert TRACE_ENV not in os.environ
    worker = CropWorker(
        str(tiny_backbone_dir), "cpu", "fp32", None, Limits(), 2, None,
        num_threads=threads + 1, env={TRACE_ENV: str(trace)},
    )  # fmt: skip
    assert TRACE_ENV not in os.environ and torch.get_num_threads() == threads and hf_log.level == hf_level
    seen = []
    real_crop = worker.crop_items
    worker.crop_items = lambda *a: seen.append((torch.get_num_threads(), hf_log.level)) or real_crop(*a)
    rows = worker({"item": np.array([json.dumps([str(tmp_path / "c.png"), "a cup", None])], dtype=object)})
    assert list(rows["failed"]) == [False]
    assert seen == [(threads + 1, logging.ERROR)]  # while it works: its own settings
    assert TRACE_ENV not in os.environ and torch.get_num_threads() == threads and hf_log.level == hf_level
    # the forwarded variable did reach the worker: it traced the input
    assert [json.loads(line)[:3] for line in trace.read_text().splitlines()] == [
        [str(tmp_path / "c.png"), "a cup", None]
    ]


def test_orphaned_worker_stops_outside_ray_with_an_error():
    import subprocess as sp

    from clipcrop.batch.worker import DriverGoneError, stop_orphaned_worker

    p = sp.Popen([sys.executable, "-c", "pass"])
    p.wait()
    with pytest.raises(DriverGoneError, match=f"pid {p.pid}"):
        stop_orphaned_worker(p.pid)  # in a Ray actor: ray.actor.exit_actor, never os._exit


def test_folder_run_matches_one_by_one_crops(ray_session, photo_dir, tiny_clipcrop_dir, tiny_cc, tmp_path):
    out = tmp_path / "results.jsonl"
    config = BatchConfig(
        input=str(photo_dir),
        out=str(out),
        query="a cat on a sofa",
        model=str(tiny_clipcrop_dir),
        batch_size=2,
    )
    import ray.data

    ctx = ray.data.DataContext.get_current()
    bars_before, ray_data_log = ctx.enable_progress_bars, logging.getLogger("ray.data")
    level_before = ray_data_log.level
    ray_data_log.setLevel(logging.DEBUG)
    try:
        summary = run_batch(config)
        # Ray Data's settings are the caller's again: the job turned the bars off and the logger down
        assert ctx.enable_progress_bars == bars_before and ray_data_log.level == logging.DEBUG
    finally:
        ray_data_log.setLevel(level_before)
    lines = read_results(out)
    images = sorted(str(p) for p in photo_dir.rglob("*") if p.suffix in (".png", ".jpg"))
    assert Counter(d["image"] for d in lines) == Counter(images)  # every input exactly once
    assert (summary.done, summary.failed, summary.skipped, summary.exit_code) == (len(PHOTOS), 1, 0, 1)
    assert summary.images_per_s > 0
    by_image = {d["image"]: d for d in lines}
    broken = by_image.pop(str(photo_dir / "broken.jpg"))
    assert broken["crops"] == [] and "broken.jpg" in broken["error"] and broken["query"] == "a cat on a sofa"
    for image, got in by_image.items():
        assert_same_crops(got, tiny_cc.crop(image, query="a cat on a sofa").to_dict())

    # a second run finds everything done: nothing recomputed, same exit status
    again = run_batch(config)
    assert (again.done, again.failed, again.skipped, again.skipped_failed) == (0, 0, len(images), 1)
    assert again.exit_code == 1 and read_results(out) == lines


def test_manifest_with_queries_relative_paths_and_image_query(
    ray_session, tiny_backbone_dir, tiny_free_cc, tmp_path
):
    jobs = tmp_path / "jobs"
    (jobs / "img").mkdir(parents=True)
    shutil.copy(sample_photo("astronaut.png"), jobs / "img" / "astronaut.png")
    shutil.copy(sample_photo("coffee.png"), jobs / "img" / "coffee.png")
    chelsea = sample_photo("chelsea.png")  # absolute path, outside the manifest's folder
    manifest = jobs / "manifest.jsonl"
    rows = [
        {"image": "img/astronaut.png", "query": "a woman in a space suit"},
        {"image": "img/astronaut.png", "query": "a flag"},  # same image, another query: another input
        {"image": "img/coffee.png"},  # no query: --query applies
        {"image": str(chelsea), "image_query": "img/coffee.png"},
        {"image": "img/missing.png", "query": "anything"},
        {"image": "img/coffee.png", "query": "a cup", "image_query": "img/astronaut.png"},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    out = tmp_path / "out" / "results.jsonl"  # its folder is created
    summary = run_batch(
        BatchConfig(input=str(manifest), out=str(out), query="a cup of coffee", model=str(tiny_backbone_dir))
    )
    lines = read_results(out)
    assert len(lines) == 7 and summary.done == 4 and summary.failed == 3 and summary.exit_code == 1
    got = {(d["image"], d["query"], d.get("image_query")): d for d in lines}
    astro, coffee = str(jobs / "img" / "astronaut.png"), str(jobs / "img" / "coffee.png")
    expected_ok = [
        ((astro, "a woman in a space suit", None), {"query": "a woman in a space suit"}),
        ((astro, "a flag", None), {"query": "a flag"}),
        ((coffee, "a cup of coffee", None), {"query": "a cup of coffee"}),
        ((str(chelsea), None, coffee), {"image_query": coffee}),
    ]
    for key, kwargs in expected_ok:
        assert_same_crops(got[key], tiny_free_cc.crop(key[0], **kwargs).to_dict())
    assert "no such file" in got[(str(jobs / "img" / "missing.png"), "anything", None)]["error"]
    errors = sorted(d["error"] for d in lines if d["error"])
    assert any("not both" in e for e in errors) and any("not valid JSON" in e for e in errors)


def test_batch_cli_equals_crop_json(ray_session, photo_dir, tiny_backbone_dir, tmp_path):
    # the query is cleaned (whitespace collapsed) in success and error lines alike
    common = ["--query", "  a   rocket ", "--model", str(tiny_backbone_dir)]
    crop = subprocess.run(
        [sys.executable, "-m", "clipcrop.cli", "crop", str(photo_dir), "--json", "--quiet", *common],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )
    assert crop.returncode == 1, crop.stderr  # broken.jpg
    out = tmp_path / "results.jsonl"
    batch = subprocess.run(
        [sys.executable, "-m", "clipcrop.cli", "batch", str(photo_dir), "--out", str(out), *common]
        + ["--ray-address", ray_session, "--batch-size", "3"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )
    assert batch.returncode == 1, batch.stderr
    assert batch.stdout == ""  # results go to the file, Ray's noise to stderr
    assert "5 done, 1 failed, 0 skipped" in batch.stderr and "images/s" in batch.stderr
    assert "Traceback" not in batch.stderr
    want = {d["image"]: d for d in map(json.loads, crop.stdout.splitlines())}
    got = {d["image"]: d for d in read_results(out)}
    assert set(got) == set(want) and len(got) == len(read_results(out))
    assert [d["query"] for d in want.values()] == ["a rocket"] * len(want)
    for image, d in want.items():
        if d["error"]:
            # the same object, built by one function; batch adds the options it keys inputs by
            assert got[image] == {**d, "top_k": 5, "aspect": None}
        else:
            assert_same_crops(got[image], d)


def test_batch_cli_usage_errors(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipcrop.cli",
            "batch",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "r.jsonl"),
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert r.returncode == 2 and "no such file or folder" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r.jsonl").exists()


def test_killed_runs_resume_to_exactly_once(tiny_backbone_dir, tmp_path):
    """SIGKILL the command at random points (start-up, mid-run, mid-write), re-run until it finishes."""
    seed = int(os.environ.get("CLIPCROP_TEST_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    folder = tmp_path / "many"
    folder.mkdir()
    base = Image.open(sample_photo("chelsea.png")).convert("RGB").resize((120, 80))
    # enough images that two mid-run kills always find work left: the tiny model writes results
    # at tens of images per second, so a kill "0.4 s after 11 new lines" can land 40 lines later
    n = 120
    for i in range(n):
        base.rotate(i * 7.5).save(folder / f"img_{i:03d}.jpg", quality=85)
    out, trace = tmp_path / "results.jsonl", tmp_path / "processed.jsonl"
    cmd = [sys.executable, "-m", "clipcrop.cli", "batch", str(folder), "--out", str(out)]
    cmd += ["--query", "a cat", "--model", str(tiny_backbone_dir), "--batch-size", "1"]
    env = cli_env(CLIPCROP_BATCH_TRACE=str(trace))

    def count_lines() -> int:
        return out.read_bytes().count(b"\n") if out.exists() else 0

    started: list[subprocess.Popen] = []
    kills, final = [], None
    try:
        for attempt in range(8):
            before = count_lines()
            log = open(tmp_path / f"run{attempt}.log", "w")  # noqa: SIM115
            p = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
            started.append(p)
            t0 = time.monotonic()
            if len(kills) == 0:  # during Ray/model start-up or the first images
                when, grow = rng.uniform(0.5, 6.0), None
            elif len(kills) < 3:  # after the results grew, then a random short moment
                # two blocks of 4 or more: what the previous kill lost is written by then (the
                # first two tasks of a Ray actor may run in either order)
                when, grow = rng.uniform(0.0, 0.4), rng.randint(8, 11)
            else:
                when, grow = None, None
            grown_at = None
            while p.poll() is None and time.monotonic() - t0 < 240:
                if grow is not None and grown_at is None and count_lines() >= before + grow:
                    grown_at = time.monotonic()
                deadline = (t0 if grow is None else grown_at) if when is not None else None
                if deadline is not None and time.monotonic() - deadline >= when:
                    # the driver alone (as `kill -9 PID`) once, its whole process group otherwise
                    if len(kills) == 1:
                        os.kill(p.pid, signal.SIGKILL)
                    else:
                        os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                    kills.append((attempt, before, count_lines(), round(time.time(), 3)))
                    break
                time.sleep(0.01)
            else:
                log.close()
                if p.poll() is None:
                    pytest.fail(f"run {attempt} hung (seed {seed})")
                final = (p.returncode, (tmp_path / f"run{attempt}.log").read_text(), before)
                break
            log.close()
    finally:
        for p in started:  # ray processes of killed runs (same session as their driver)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    context = f"seed {seed}, kills (run, lines before, lines after, time) {kills}"
    assert final is not None, context
    rc, log_text, before_final = final
    assert rc == 0, f"{context}\n{log_text}"
    assert len(kills) >= 3, context
    lines = read_results(out)  # every line valid JSON, no partial line
    counts = Counter(d["image"] for d in lines)
    assert counts == Counter(str(folder / f"img_{i:03d}.jpg") for i in range(n)), context
    assert all(d["error"] is None and d["query"] == "a cat" and d["crops"] for d in lines)
    assert f"{before_final} skipped" in log_text, log_text
    trace_rows = [json.loads(line) for line in trace.read_text().splitlines()]  # image, query, -, pid, time
    processed = Counter(row[0] for row in trace_rows)
    assert set(processed) == set(counts), context
    over = {Path(r[0]).name: r[3:] for r in trace_rows if processed[r[0]] > 2}
    assert max(processed.values()) <= 2, f"{context}: {processed.most_common(5)} {over}"
    # a kill throws away at most the blocks in flight: MAX_TASKS_PER_ACTOR on the one worker plus
    # one finished block the driver had not written yet, MIN_BLOCK_ROWS images each
    lost_per_kill = (MAX_TASKS_PER_ACTOR + 1) * MIN_BLOCK_ROWS
    assert sum(processed.values()) - n <= lost_per_kill * len(kills), (
        f"{context}: {sum(processed.values())} processed"
    )


# ---------------------------------------------------------------------------------- crop options, pictures
def box_ratio(box) -> float:
    x0, y0, x1, y1 = box
    return (x1 - x0) / (y1 - y0)


def test_crop_options_per_line_and_crop_pictures(ray_session, tiny_clipcrop_dir, tiny_cc, tmp_path):
    """--top-k/--aspect for the job, top_k/aspect per manifest line, bad lines as error lines, and
    crop pictures that keep the source's profile and EXIF (batch has what crop has)."""
    from test_metadata import assert_carried, tagged_photo

    from clipcrop.batch.outputs import condition_digest
    from clipcrop.errors import OutputExistsError

    jobs = tmp_path / "jobs"
    (jobs / "img").mkdir(parents=True)
    (jobs / "img" / "a.jpg").write_bytes(tagged_photo("jpg", size=(360, 240)))
    (jobs / "img" / "b.png").write_bytes(tagged_photo("png", size=(360, 240)))
    rows = [
        {"image": "img/a.jpg"},  # the job's: top_k 3, aspect 1:1
        {"image": "img/a.jpg", "query": "a cat", "top_k": 2, "aspect": "16:9"},
        {"image": "img/b.png", "top_k": 1},
        {"image": "img/b.png", "topk": 2},
        {"image": "img/b.png", "aspect": "0:1"},
        {"image": "img/b.png", "top_k": 13},  # the checkpoint ranks 12
    ]
    manifest = jobs / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    crops = tmp_path / "crops"
    config = BatchConfig(
        input=str(manifest),
        out=str(tmp_path / "r.jsonl"),
        query="a woman",
        model=str(tiny_clipcrop_dir),
        top_k=3,
        aspect_ratio="1:1",
        crops_out=str(crops),
    )
    summary = run_batch(config)
    assert (summary.done, summary.failed) == (3, 3)
    lines = read_results(tmp_path / "r.jsonl")
    errors = sorted(d["error"] for d in lines if d["error"])  # by line number: 4, 5, 6
    for needle, message in zip(
        ['unknown key "topk"', "positive", "between 1 and 12, got 13"], errors, strict=True
    ):
        assert needle in message and str(manifest) in message
    ok = {(Path(d["image"]).name, d["query"], d["top_k"], d["aspect"]): d for d in lines if not d["error"]}
    assert set(ok) == {
        ("a.jpg", "a woman", 3, "1:1"),
        ("a.jpg", "a cat", 2, "16:9"),
        ("b.png", "a woman", 1, "1:1"),
    }
    written = set()
    for (name, query, top_k, aspect), d in ok.items():
        want = tiny_cc.crop(jobs / "img" / name, query=query, top_k=top_k, aspect_ratio=aspect).to_dict()
        assert_same_crops({**d, "image": want["image"]}, want)
        assert 1 <= len(d["crops"]) <= top_k
        ratio = 16 / 9 if aspect == "16:9" else 1.0
        assert all(abs(box_ratio(c["box"]) - ratio) < 0.02 for c in d["crops"])
        assert len(d["crop_files"]) == len(d["crops"])
        for c, path in zip(d["crops"], d["crop_files"], strict=True):
            picture = Image.open(path)
            x0, y0, x1, y1 = c["box"]
            assert picture.size == (x1 - x0, y1 - y0)
            assert_carried(picture)
            written.add(Path(path).relative_to(crops).as_posix())
    # a.jpg is in two inputs: a hash of each one's condition and options keeps their names apart
    stems = {n.rsplit("_crop", 1)[0] for n in written}
    assert stems == {
        f"img/a_{condition_digest('a woman', None, 3, '1:1')}",
        f"img/a_{condition_digest('a cat', None, 2, '16:9')}",
        "img/b",
    }
    assert {p.relative_to(crops).as_posix() for p in crops.rglob("*") if p.is_file()} == written

    # re-run: nothing to do; a new job into the same folder is refused before anything runs
    assert run_batch(config).skipped == 6
    fresh = tmp_path / "r2.jsonl"
    with pytest.raises(OutputExistsError, match="set overwrite=True to replace them") as refused:
        run_batch(BatchConfig(**{**config.__dict__, "out": str(fresh)}))
    assert "--" not in str(refused.value)  # a library message: parameters, not the CLI's flags
    found = {p.relative_to(crops).as_posix() for p in refused.value.found}
    assert found and found <= written
    assert not fresh.exists()
    # asked to: replaced, and without the EXIF
    stripped = BatchConfig(
        **{**config.__dict__, "out": str(fresh), "overwrite": True, "strip_metadata": True}
    )
    assert run_batch(stripped).done == 3
    for d in read_results(fresh):
        for path in d.get("crop_files", []):
            assert_carried(Image.open(path), exif=False)


def test_batch_cli_crop_flags_are_checked_before_ray(tiny_clipcrop_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(sample_photo("coffee.png"), photos / "c.png")
    (tmp_path / "crops").mkdir()
    (tmp_path / "crops" / "c_crop1.jpg").write_bytes(b"precious")
    base = [sys.executable, "-m", "clipcrop.cli", "batch", str(photos), "--out", str(tmp_path / "r.jsonl")]
    base += ["--model", str(tiny_clipcrop_dir)]
    for extra, needle in [
        (
            ["--crops-out", str(tmp_path / "crops"), "--top-k", "2"],
            "c_crop1.jpg already exists; pass --overwrite",
        ),
        (["--crops-out", str(tmp_path / "crops" / "c_crop1.jpg")], "--crops-out " + str(tmp_path / "crops")),
        (["--strip-metadata"], "--strip-metadata needs --crops-out DIR"),
        (["--top-k", "13"], "top_k must be between 1 and 12"),
        (["--aspect", "0:1"], "aspect"),
    ]:
        r = subprocess.run(base + extra, capture_output=True, text=True, env=cli_env(), timeout=120)
        assert r.returncode == 2, (extra, r.stderr)
        assert r.stderr.startswith("clipcrop: error:") and needle in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert (tmp_path / "crops" / "c_crop1.jpg").read_bytes() == b"precious"
    assert not (tmp_path / "r.jsonl").exists()
