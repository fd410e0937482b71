"""The pure parts of ``clipcrop batch``: manifests, resume bookkeeping, torn-line repair (no Ray)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clipcrop.batch.config import BatchSummary
from clipcrop.batch.manifest import BatchItem, collect_items, read_manifest
from clipcrop.batch.results import ResultsWriter, plan_batch, repair_results
from clipcrop.errors import ParameterError
from clipcrop.limits import Limits

LIMITS = Limits()


def ok_line(image: str, query: str | None = "a cat", **extra) -> dict:
    return {"image": image, "width": 4, "height": 3, "query": query, "crops": [], "error": None, **extra}


def write_lines(path: Path, objects: list[dict], tail: bytes = b"") -> None:
    path.write_bytes(b"".join(json.dumps(o).encode() + b"\n" for o in objects) + tail)


def test_manifest_paths_queries_and_bad_lines(tmp_path):
    sub = tmp_path / "m"
    sub.mkdir()
    manifest = sub / "jobs.jsonl"
    lines = [
        json.dumps({"image": "a.jpg", "query": "  a   red car "}),
        json.dumps({"image": "/abs/b.png"}),
        "",
        json.dumps({"image": "c.jpg", "image_query": "ref/dog.jpg"}),
        "{not json",
        json.dumps({"query": "no image"}),
        json.dumps({"image": "d.jpg", "query": "x", "image_query": "ref/dog.jpg"}),
        json.dumps({"image": "e.jpg", "query": "   "}),
        json.dumps({"image": "f.jpg", "query": None}),
    ]
    manifest.write_text("\n".join(lines) + "\n")
    items = read_manifest(manifest, "the default", LIMITS)
    assert len(items) == 8  # the blank line is ignored, every other line gives exactly one item
    a, b, c, bad_json, no_image, both, empty, default = items
    assert a == BatchItem(str(sub / "a.jpg"), "a red car", None)  # relative to the manifest, query cleaned
    assert b == BatchItem("/abs/b.png", "the default", None)  # absolute path kept; default query
    assert c == BatchItem(
        str(sub / "c.jpg"), None, str(sub / "ref" / "dog.jpg")
    )  # no default with image_query
    assert bad_json.error and f"{manifest}:5" in bad_json.error and bad_json.image == f"{manifest}:5"
    assert no_image.error and '"image"' in no_image.error
    assert both.error and "not both" in both.error
    assert empty.error and "empty" in empty.error
    assert default.query == "the default" and default.error is None
    assert {it.key for it in items if it.error is None} == {a.key, b.key, c.key, default.key}


def test_manifest_relative_to_cwd_when_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("m.jsonl").write_text(json.dumps({"image": "x.png", "query": "q"}) + "\n")
    (item,) = read_manifest("m.jsonl", None, LIMITS)
    assert item.image == "x.png"


def test_collect_items_folder_and_bad_inputs(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.jpg", "sub/c.webp", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    items = collect_items(tmp_path, "a dog", LIMITS)
    assert [Path(it.image).relative_to(tmp_path).as_posix() for it in items] == [
        "a.jpg",
        "b.png",
        "sub/c.webp",
    ]
    assert all(it.query == "a dog" and it.error is None for it in items)
    with pytest.raises(ParameterError, match="no such file"):
        collect_items(tmp_path / "missing", None, LIMITS)
    with pytest.raises(ParameterError, match="not a folder"):
        collect_items(tmp_path / "notes.txt", None, LIMITS)


def test_torn_last_line_is_cut_away(tmp_path):
    results = tmp_path / "r.jsonl"
    good = [ok_line("a.png"), ok_line("b.png")]
    torn = json.dumps(ok_line("c.png")).encode()[:37]
    write_lines(results, good, tail=torn)
    state = repair_results(results)
    assert state.torn_bytes == len(torn) and state.dropped_lines == 0
    assert results.read_bytes() == b"".join(json.dumps(o).encode() + b"\n" for o in good)
    assert state.done == {("a.png", "a cat", None, 5, None), ("b.png", "a cat", None, 5, None)}
    # appending after the repair gives a file of whole valid lines
    with ResultsWriter(results) as w:
        w.append([ok_line("c.png")])
    assert [json.loads(line)["image"] for line in results.read_text().splitlines()] == [
        "a.png",
        "b.png",
        "c.png",
    ]


def test_line_missing_only_its_newline_is_kept(tmp_path):
    results = tmp_path / "r.jsonl"
    write_lines(results, [ok_line("a.png")], tail=json.dumps(ok_line("b.png")).encode())
    state = repair_results(results)
    assert state.completed_tail and state.torn_bytes == 0
    assert results.read_text().endswith("\n") and len(results.read_text().splitlines()) == 2
    assert ("b.png", "a cat", None, 5, None) in state.done


def test_invalid_complete_lines_are_dropped_atomically(tmp_path):
    results = tmp_path / "r.jsonl"
    results.write_bytes(
        json.dumps(ok_line("a.png")).encode()
        + b"\n"
        + b"\x00\x00garbage\n"
        + b"[1, 2]\n"
        + json.dumps(ok_line("b.png", query=None)).encode()
        + b"\n"
    )
    state = repair_results(results)
    assert state.dropped_lines == 2 and state.lines == 2
    assert [json.loads(x)["image"] for x in results.read_text().splitlines()] == ["a.png", "b.png"]
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_results_file_is_an_empty_state(tmp_path):
    state = repair_results(tmp_path / "none.jsonl")
    assert state.done == set() and state.lines == 0
    assert not (tmp_path / "none.jsonl").exists()


def test_resume_plan_skips_done_and_failed_inputs(tmp_path):
    results = tmp_path / "r.jsonl"
    items = [BatchItem(f"{i}.png", "a cat") for i in range(5)]
    items += [BatchItem("0.png", "a dog"), BatchItem("0.png", None, "ref.png"), BatchItem("1.png", "a cat")]
    failed = {**ok_line("2.png"), "width": None, "height": None, "error": "2.png: broken"}
    write_lines(
        results,
        [ok_line("0.png"), failed, ok_line("0.png", query=None, image_query="ref.png"), ok_line("zz.png")],
        tail=b'{"image": "3.png", "wid',
    )
    plan = plan_batch(items, results)
    assert plan.duplicates == 1  # 1.png / a cat twice
    assert plan.skipped == 3 and plan.skipped_failed == 1
    assert [it.key for it in plan.pending] == [
        ("1.png", "a cat", None, 5, None),
        ("3.png", "a cat", None, 5, None),  # its torn line does not count
        ("4.png", "a cat", None, 5, None),
        ("0.png", "a dog", None, 5, None),  # same image, another query: another input
    ]
    assert plan.state.torn_bytes > 0


def test_writer_appends_whole_lines(tmp_path):
    path = tmp_path / "deep" / "r.jsonl"
    with ResultsWriter(path) as w:
        w.append([ok_line("a.png"), ok_line("ü.png")])
        w.append([])
    with ResultsWriter(path) as w:
        w.append([ok_line("b.png")])
    data = path.read_bytes()
    assert data.endswith(b"\n") and [json.loads(x)["image"] for x in data.splitlines()] == [
        "a.png",
        "ü.png",
        "b.png",
    ]
    assert os.stat(path).st_size == len(data)


def test_summary_exit_code_and_line():
    s = BatchSummary(total=10, done=7, failed=0, skipped=3, skipped_failed=1, seconds=2.0, out="r.jsonl")
    assert s.exit_code == 1  # an earlier run's failure still makes the job fail
    assert BatchSummary(total=3, done=3, seconds=1.0).exit_code == 0
    line = s.line()
    for word in ("7 done", "0 failed", "3 skipped", "images/s", "3.50"):
        assert word in line


def test_one_job_per_results_file(tmp_path):
    from clipcrop.batch.config import BatchConfig
    from clipcrop.batch.driver import run_batch
    from clipcrop.batch.results import lock_results
    from clipcrop.errors import ClipCropError

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"x")
    out = tmp_path / "r.jsonl"
    fd = lock_results(out)  # as a running job holds it
    try:
        with pytest.raises(ClipCropError, match="another clipcrop batch job"):
            run_batch(BatchConfig(input=str(tmp_path / "photos"), out=str(out)))
    finally:
        os.close(fd)
    assert out.read_bytes() == b""


def test_fail_fast_on_a_local_model_that_cannot_be(tmp_path):
    from clipcrop.batch.config import BatchConfig
    from clipcrop.batch.driver import run_batch
    from clipcrop.errors import ModelLoadError

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    for model, message in [(tmp_path / "missing", "no such folder"), (tmp_path / "empty", "no config.json")]:
        with pytest.raises(ModelLoadError, match=message):
            run_batch(
                BatchConfig(input=str(tmp_path / "photos"), out=str(tmp_path / "r.jsonl"), model=str(model))
            )
    assert not (tmp_path / "r.jsonl").exists()


def test_worker_errors_reported_as_their_message():
    from clipcrop.batch.ray_pool import explain_ray_failure

    text = (
        "ActorDiedError: ...\nTraceback (most recent call last):\n  File x\n"
        "clipcrop.errors.ModelLoadError: cannot load 'org/x': not in the local cache\n"
    )
    assert explain_ray_failure(RuntimeError(text)) == "cannot load 'org/x': not in the local cache"
    assert explain_ray_failure(RuntimeError("boom\nlast words")) == "the batch job failed in Ray: last words"


def test_pid_alive_sees_dead_and_zombie_drivers():
    import subprocess
    import sys
    import time

    from clipcrop.batch.worker import pid_alive

    assert pid_alive(os.getpid())
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while pid_alive(p.pid) and time.monotonic() < deadline:  # exited, not yet reaped: a zombie
        time.sleep(0.05)
    assert not pid_alive(p.pid)
    p.wait()
    assert not pid_alive(p.pid)


# ---------------------------------------------------------------------------------- crop options
def test_manifest_lines_override_the_job_options_and_bad_ones_are_their_errors(tmp_path):
    from clipcrop.batch.manifest import ItemDefaults

    manifest = tmp_path / "jobs.jsonl"
    rows = [
        {"image": "a.jpg"},  # the job's defaults
        {"image": "a.jpg", "top_k": 2, "aspect": "1:1"},  # its own: another input
        {
            "image": "b.jpg",
            "query": "a dog",
            "aspect": "free",
            "top_k": None,
        },  # "free" overrides; null = default
        {"image": "c.jpg", "top_k": 0},
        {"image": "c.jpg", "top_k": "3"},
        {"image": "c.jpg", "top_k": True},
        {"image": "c.jpg", "top_k": 13},  # above the model's 12
        {"image": "c.jpg", "aspect": "0:1"},
        {"image": "c.jpg", "aspect": [1, 1]},
        {"image": "c.jpg", "topk": 3},  # a typo: never silently ignored
        {"image": "c.jpg", "query": "x", "crop": True},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    defaults = ItemDefaults(top_k=4, aspect="16:9", max_top_k=12)
    items = read_manifest(manifest, "a cat", LIMITS, defaults)
    assert len(items) == len(rows)
    job, own, free, *bad = items
    assert (job.query, job.top_k, job.aspect, job.error) == ("a cat", 4, "16:9", None)
    assert (own.top_k, own.aspect, own.error) == (2, "1:1", None) and own.key != job.key
    assert (free.query, free.top_k, free.aspect, free.error) == ("a dog", 4, "free", None)
    messages = [it.error for it in bad]
    assert all(m and m.startswith(f"{manifest}:") for m in messages), messages
    for message, needle in zip(
        messages,
        [
            "at least 1, got 0",
            'got "3"',
            "got true",
            "between 1 and 12, got 13",
            "positive",
            "got [1, 1]",
            'unknown key "topk"',
            'unknown key "crop"',
        ],
        strict=True,
    ):
        assert needle in message, (needle, message)
    # an error line keeps the values as given, so a re-run finds it done
    lines = [it.error_line() for it in bad]
    assert [(d["top_k"], d["aspect"]) for d in lines[:3]] == [(0, "16:9"), ("3", "16:9"), (True, "16:9")]
    results = tmp_path / "r.jsonl"
    write_lines(results, lines)
    assert plan_batch(bad, results).pending == []


def test_folder_items_get_the_job_options_and_image_query(tmp_path):
    from clipcrop.batch.manifest import ItemDefaults

    (tmp_path / "a.jpg").write_bytes(b"x")
    (item,) = collect_items(
        tmp_path, None, LIMITS, ItemDefaults(image_query="ref.png", top_k=3, aspect="4:3")
    )
    assert (item.query, item.image_query, item.top_k, item.aspect) == (None, "ref.png", 3, "4:3")


def test_results_remember_the_options_and_old_lines_mean_the_old_defaults(tmp_path):
    results = tmp_path / "r.jsonl"
    write_lines(results, [ok_line("a.png"), ok_line("b.png", top_k=2, aspect="1:1")])
    items = [
        BatchItem("a.png", "a cat"),  # an old line (no top_k, no aspect): 5 crops, any ratio
        BatchItem("a.png", "a cat", top_k=2),
        BatchItem("b.png", "a cat", top_k=2, aspect="1:1"),
        BatchItem("b.png", "a cat", top_k=2, aspect="3:2"),
    ]
    plan = plan_batch(items, results)
    assert [(it.image, it.top_k, it.aspect) for it in plan.pending] == [
        ("a.png", 2, None),
        ("b.png", 2, "3:2"),
    ]


def test_crop_names_for_a_manifest_never_collide(tmp_path):
    from clipcrop.batch.outputs import condition_digest, existing_targets, plan_stems

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    items = [
        BatchItem(str(tmp_path / "a" / "x.jpg"), "a cat"),
        BatchItem(str(tmp_path / "b" / "x.jpg"), "a cat"),
        BatchItem(str(tmp_path / "b" / "x.jpg"), "a dog", top_k=2),  # same photo, another input
        BatchItem(str(tmp_path / "b" / "x.jpg"), "a dog", top_k=2),  # the same input again: same names
        BatchItem("/elsewhere/y.png", "a cat"),
        BatchItem(str(tmp_path / "bad.jpg"), error="broken"),
    ]
    stems = plan_stems(items, str(manifest))
    dog = condition_digest("a dog", None, 2, None)
    cat = condition_digest("a cat", None, 5, None)
    assert len(stems) == 4  # one per input, none for the failed one
    names = [stems[it.key].as_posix() for it in items[:5]]
    assert names[1].endswith(f"b/x_{cat}") and names[2].endswith(f"b/x_{dog}") and names[2] == names[3]
    assert names[0].endswith("a/x") and names[4].endswith("elsewhere/y")
    assert len({n.casefold() for n in names[:3] + names[4:]}) == 4
    out = tmp_path / "crops"
    (out / Path(names[2]).parent).mkdir(parents=True)
    (out / f"{names[2]}_crop2.jpg").write_bytes(b"x")
    (out / f"{names[2]}_crop3.jpg").write_bytes(b"x")  # beyond that input's top_k: not its picture
    assert existing_targets(items, stems, str(out)) == [out / f"{names[2]}_crop2.jpg"] * 2


def test_manifest_inside_folder_names_follow_the_manifest(tmp_path):
    from clipcrop.batch.outputs import plan_stems

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    items = [BatchItem(str(tmp_path / "img" / "a.jpg")), BatchItem(str(tmp_path / "b.jpg"))]
    assert [s.as_posix() for s in plan_stems(items, str(manifest)).values()] == ["img/a", "b"]


def test_library_messages_name_the_config_fields_not_the_flags(tmp_path):
    from clipcrop.batch.config import BatchConfig
    from clipcrop.batch.driver import run_batch

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"x")
    (tmp_path / "file").write_text("x")
    base = {"input": str(tmp_path / "photos"), "out": str(tmp_path / "r.jsonl")}
    for changes, message in [
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"num_workers": 0}, "num_workers must be at least 1, got 0"),
        ({"out": str(tmp_path)}, f"out {tmp_path}: is a folder; give the results file (JSONL)"),
        ({"image_query": str(tmp_path / "no.png")}, f"image_query {tmp_path / 'no.png'}: no such file"),
        ({"strip_icc": True}, "strip_metadata and strip_icc need crops_out, the folder crops are written to"),
        (
            {"crops_out": str(tmp_path / "file")},
            f"crops_out {tmp_path / 'file'}: is a file; give the folder to write crops to",
        ),
    ]:
        with pytest.raises(ParameterError) as caught:
            run_batch(BatchConfig(**{**base, **changes}))
        assert str(caught.value) == message
    assert not (tmp_path / "r.jsonl").exists()


def test_failed_input_line_is_one_shape_for_crop_and_batch():
    from clipcrop.batch.manifest import BatchItem
    from clipcrop.io.result_lines import failed_crop_line

    assert failed_crop_line("a.jpg", "a cat", "a.jpg: unreadable") == {
        "image": "a.jpg",
        "width": None,
        "height": None,
        "query": "a cat",
        "crops": [],
        "error": "a.jpg: unreadable",
    }
    line = BatchItem("a.jpg", None, "q.png", "a.jpg: bad", 3, "1:1").error_line()
    assert list(line) == [
        "image",
        "width",
        "height",
        "query",
        "crops",
        "error",
        "image_query",
        "top_k",
        "aspect",
    ]
    assert (line["image_query"], line["top_k"], line["aspect"], line["error"]) == (
        "q.png",
        3,
        "1:1",
        "a.jpg: bad",
    )
