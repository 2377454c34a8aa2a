"""Rollout timelines stay readable pictures for any fleet size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib.image

from edgewave.tasks.rollout.record import RolloutRecord, WaveRecord
from edgewave.tasks.rollout.timeline import MAX_SITE_ROWS, render, rows


def record(n_sites: int) -> RolloutRecord:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    sites = [f"s{i:04d}" for i in range(n_sites)]
    cut = [0, max(1, n_sites // 10), n_sites // 2, n_sites]
    waves = []
    for i, name in enumerate(["canary", "ten", "rest"]):
        members = sites[cut[i]:cut[i + 1]]
        waves.append(WaveRecord(index=i, name=name, sites=members, status="advanced", decision="advance",
                                committed_at=start + timedelta(seconds=10 * i + 1),
                                decided_at=start + timedelta(seconds=10 * i + 9),
                                measurements=[{"at": (start + timedelta(seconds=10 * i + 5)).isoformat(),
                                               "verdict": "pass", "sites": [{"site": s} for s in members]}]))
    return RolloutRecord(id="ro-x", model="m", version=2, from_version=1, policy_hash="h", waves=waves,
                         status="succeeded", started_at=start, finished_at=start + timedelta(seconds=30))


def test_a_small_fleet_gets_a_row_per_site_and_a_large_one_a_row_per_wave() -> None:
    assert rows(record(6))[0] == [f"s{i:04d}" for i in range(6)]
    labels, row_of = rows(record(2000))
    assert labels == ["canary (200 sites)", "ten (800 sites)", "rest (1000 sites)"]
    assert row_of["s0000"] == 0 and row_of["s1999"] == 2


def test_the_picture_of_a_2000_site_rollout_is_no_taller_than_that_of_a_small_fleet(tmp_path: Path) -> None:
    small = matplotlib.image.imread(render(record(MAX_SITE_ROWS), tmp_path / "small.png"))
    large = matplotlib.image.imread(render(record(2000), tmp_path / "large.png"))
    assert large.shape[0] < small.shape[0]


def test_the_rollout_artifact_carries_the_picture_itself_and_links_only_a_browser_can_open(tmp_path: Path) -> None:
    import base64
    import re

    from edgewave.tasks.rollout.record import report_markdown

    png = render(record(6), tmp_path / "t.png").read_bytes()
    text = report_markdown(record(6), png, {"v2": "http://127.0.0.1:5000/#/models/m/versions/2"})
    inline = re.search(r"!\[[^]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)
    assert inline and base64.b64decode(inline.group(1)) == png, "the PNG is inline, not a path on a server's disk"
    assert str(tmp_path) not in text
    assert "| 1/3 canary | 1 | advanced | advance |" in text
    assert "[v2](http://127.0.0.1:5000/#/models/m/versions/2)" in text
    assert "MLflow" not in report_markdown(record(6), None, {}), "no links when MLflow has no pages"
