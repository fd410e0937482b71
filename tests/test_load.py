"""benchmarks/load.py with small numbers on the tiny model: no 5xx, every answer right, RSS flat."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_load_is_clean_and_memory_stays_flat(tiny_clipcrop_dir, tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from load import print_report, run_load
    finally:
        sys.path.remove(str(BENCHMARKS))

    report = run_load(
        str(tiny_clipcrop_dir), clients=4, requests=40, hostile_every=4, log_path=tmp_path / "server.log"
    )
    print_report(report, "tiny")
    assert report.server_errors == 0, report.statuses
    assert not report.transport_errors, report.transport_errors
    assert not report.wrong, report.wrong
    assert sum(report.statuses.values()) == 40
    assert report.statuses.get(200) == 30  # the 10 hostile ones got their 4xx (checked per answer)
    # memory: measured after a warm-up, from the end of the first quarter of the traffic to the end
    assert report.rss_first_quarter_mb > 0 and report.rss_end_mb > 0
    assert report.rss_growth < 0.10, report.as_dict()
