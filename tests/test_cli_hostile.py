"""The hostile corpus through the CLI: one error line per bad file, valid files still cropped."""

from __future__ import annotations

import json
from pathlib import Path

from hostile import HOSTILE_QUERIES, IMAGE_CASES
from test_cli import run_cli


def test_every_hostile_file_gets_one_error_line_and_the_run_goes_on(tiny_backbone_dir, tmp_path):
    paths = []
    for i, case in enumerate(IMAGE_CASES):
        path = tmp_path / f"{i:03d}_{case.filename}"
        path.write_bytes(case.data)
        paths.append(path)
    r = run_cli(
        "crop", *map(str, paths), "--json", "--top-k", "2", "--model", str(tiny_backbone_dir), "--quiet"
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(d["image"]).name for d in lines] == [p.name for p in paths]
    error_lines = [line for line in r.stderr.splitlines() if line.startswith("clipcrop: error:")]
    for case, d in zip(IMAGE_CASES, lines, strict=True):
        if case.expect is None:
            assert d["error"] is None, (case.name, d["error"])
            assert (d["width"], d["height"]) == case.size, case.name
            assert 1 <= len(d["crops"]) <= 2
        else:
            assert d["error"] and d["crops"] == [], case.name
            assert "\n" not in d["error"]
    assert len(error_lines) == sum(case.expect is not None for case in IMAGE_CASES)


def test_hostile_queries_on_the_command_line(tiny_backbone_dir, tmp_path):
    """Each refused query is one error line and exit 2 (a usage error, found before the model
    loads); accepted ones crop (NUL bytes cannot be argv)."""
    from conftest import sample_photo

    photo = str(sample_photo("coffee.png"))
    valid = {"plain", "stopwords_only", "emoji", "arabic_rtl"}  # each valid one loads the model: a sample
    for name, query, expect in HOSTILE_QUERIES:
        if not isinstance(query, str) or "\x00" in query or len(query) > 100_000 or name == "lone_surrogate":
            continue  # not expressible as argv (None, NUL, surrogates); covered by library and service tests
        if expect is None and name not in valid:
            continue
        r = run_cli("crop", photo, "--query", query, "--json", "--model", str(tiny_backbone_dir))
        assert "Traceback" not in r.stderr, name
        if expect is None:
            assert r.returncode == 0, (name, r.stderr[-500:])
        else:
            assert r.returncode == 2, name
            assert len([ln for ln in r.stderr.splitlines() if ln.startswith("clipcrop: error:")]) == 1, name
