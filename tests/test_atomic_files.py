"""Every file ClipCrop writes gets the permissions the umask gives (``0o666 & ~umask``), atomically."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
from PIL import Image

from clipcrop.batch.results import ResultsWriter, repair_results
from clipcrop.errors import OutputExistsError
from clipcrop.evaluation.harness import write_jsonl_atomic
from clipcrop.io.atomic_files import atomic_open, write_atomic
from clipcrop.io.render import save_atomic

UMASKS = [0o022, 0o077, 0o002]


@pytest.fixture(params=UMASKS, ids=[f"umask{m:03o}" for m in UMASKS])
def umask(request):
    """Run the test under a umask, restoring the process's own afterwards (it is process-global)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_every_writer_follows_the_umask(umask, tmp_path):
    want = 0o666 & ~umask  # 0644, 0600, 0664: never mkstemp's fixed 0600
    crop = save_atomic(Image.new("RGB", (8, 6), "red"), tmp_path / "out" / "x_crop1.jpg")
    raw = write_atomic(tmp_path / "raw.bin", b"abc")
    preds = tmp_path / "preds.jsonl"
    write_jsonl_atomic(preds, [{"a": 1}])
    results = tmp_path / "results.jsonl"
    with ResultsWriter(results) as w:
        w.append([{"image": "a.png", "crops": [], "error": None}])
    repaired = tmp_path / "repaired.jsonl"
    repaired.write_text('{"image": "a.png", "error": null}\nnot json\n')
    os.chmod(repaired, 0o640)
    assert repair_results(repaired).dropped_lines == 1  # rewritten through the helper
    for path in (crop, raw, preds, results, repaired):
        assert mode(path) == want, (path.name, oct(mode(path)), oct(want))
    assert Image.open(crop).size == (8, 6) and raw.read_bytes() == b"abc"
    assert json.loads(preds.read_text()) == {"a": 1}
    assert no_temp_files(tmp_path) and no_temp_files(tmp_path / "out")


def test_checkpoint_files_follow_the_umask(umask, tmp_path):
    from conftest import TINY_DECODER

    from clipcrop.modeling.model import ClipCropModel

    ClipCropModel(backbone="some/backbone", decoder=TINY_DECODER).save_pretrained(tmp_path / "ckpt")
    files = sorted(p for p in (tmp_path / "ckpt").rglob("*") if p.is_file())
    assert {p.name for p in files} >= {"config.json", "model.safetensors", "README.md"}
    assert {p.name: oct(mode(p)) for p in files} == {p.name: oct(0o666 & ~umask) for p in files}


def test_no_overwrite_keeps_the_existing_file(tmp_path):
    target = tmp_path / "x.jpg"
    target.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_atomic(target, b"new", overwrite=False)
    assert target.read_bytes() == b"precious"
    write_atomic(target, b"new")  # overwrite is the helper's default
    assert target.read_bytes() == b"new"
    assert no_temp_files(tmp_path)


def test_file_that_appears_meanwhile_is_not_replaced(tmp_path):
    """The existence check is repeated at publication (a hard link), not only before writing."""
    target = tmp_path / "x.jpg"
    with pytest.raises(OutputExistsError):
        with atomic_open(target, "wb", overwrite=False) as fh:
            fh.write(b"ours")
            target.write_bytes(b"theirs")  # another process got there first
    assert target.read_bytes() == b"theirs"
    assert no_temp_files(tmp_path)


def test_failure_leaves_nothing_behind(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as fh:
            fh.write("half")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old" and no_temp_files(tmp_path)


def test_published_training_checkpoints_and_random_backbones_follow_the_umask(umask, tmp_path):
    """Training and fine-tuning publish through ``publish_complete``; files other libraries wrote
    0600 into the temporary folder (safetensors does) come out with the umask's permissions."""
    from conftest import DATA

    from clipcrop.synthetic.random_models import make_random_owlvit
    from clipcrop.training.checkpoints import checkpoint_tmp_dir, publish_complete

    want = 0o666 & ~umask
    out = tmp_path / "ckpt"
    tmp = checkpoint_tmp_dir(out, 3)
    (tmp / "backbone").mkdir()
    for name in ("model.safetensors", "backbone/model.safetensors", "training_state.pt"):
        fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
    publish_complete(tmp, out, 3, logging.getLogger("test"))
    files = [p for p in out.rglob("*") if p.is_file()]  # the three and checkpoint.json (the step)
    assert len(files) == 4 and all(mode(p) == want for p in files), [(p.name, oct(mode(p))) for p in files]

    backbone = make_random_owlvit(tmp_path / "random", DATA, size="tiny", seed=0)
    assert {p.name: mode(p) for p in backbone.iterdir()} == {p.name: want for p in backbone.iterdir()}
