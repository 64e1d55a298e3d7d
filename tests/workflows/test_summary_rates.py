"""summary.json's rates and "keeping up": from acquisition metadata and the backlog."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from portal.runs.folder import read_summary
from workflows import batching, summary


def _epu_movies(raw: Path, n: int) -> list[str]:
    """EPU-named movies 35 s apart, all with the same mtime (as after a plain copy)."""
    raw.mkdir(parents=True)
    names = []
    for i in range(n):
        seconds = 9 * 3600 + 35 * i
        stamp = f"20260112_{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
        name = f"FoilHole_{i}_Data_1_2_{stamp}_fractions.tiff"
        (raw / name).write_bytes(b"x")
        os.utime(raw / name, (1e9, 1e9))
        names.append(name)
    return names


def _batch(out: Path, name: str, movies: list[str], processed_at: str) -> None:
    folder = out / "batches" / name
    folder.mkdir(parents=True)
    (folder / "movies.txt").write_text("".join(f"{m}\n" for m in movies))
    rows = [
        {"movie": m, "batch": name, "status": "ok", "n_particles": 3, "processed_at": processed_at}
        for m in movies
    ]
    summary.atomic_write_text(
        folder / "movies.tsv", summary.format_tsv(rows, summary.MOVIE_COLUMNS)
    )


def test_acquisition_rate_from_epu_names_not_copy_times(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    names = _epu_movies(raw, 40)
    _batch(out, "b00000", names[:4], "2001-09-09T02:00:00Z")
    scan = batching.scan_movies(raw)
    written = summary.write_summary(out, raw, "running", scan, now=time.time())
    assert written["acquisition_rate_per_h"] == round(39 * 3600 / (39 * 35), 2)  # 102.86/h
    # 36 movies wait behind a batch size of 4: not keeping up, and the portal says so
    assert written["backlog"] == 36 and written["keeping_up"] is False
    assert read_summary(out).keeping_up is False
    for k in range(1, 9):
        _batch(out, f"b{k:05d}", names[4 * k : 4 * k + 4], "2001-09-09T02:00:00Z")
    written = summary.write_summary(out, raw, "running", scan, now=time.time())
    assert written["backlog"] == 4 and written["keeping_up"] is True
    assert json.loads((out / "summary.json").read_text())["keeping_up"] is True
    assert read_summary(out).keeping_up is True


def test_keeping_up_compares_the_recent_rates_when_the_backlog_alone_cannot_tell(tmp_path):
    """A backlog between one and two batches is keeping up only when processing runs at
    90 % of the acquisition's recent rate; the backlog bounds decide on their own."""
    now = 1_000_000.0
    landed = {f"m{i}": now - 1800 + 10 * i for i in range(180)}  # 360/h for 30 min
    slow = [now - 1800 + 36 * i for i in range(50)]  # 100/h
    pace = summary.recent_pace(landed, slow, now)
    assert pace == (360.0, 100.0)
    assert summary.keeping_up(6, 4, pace) is False  # 1.5 batches waiting, and growing
    assert summary.keeping_up(6, 4, (360.0, 340.0)) is True
    assert summary.keeping_up(4, 4, pace) is True  # the batch filling
    assert summary.keeping_up(9, 4, (360.0, 400.0)) is False  # > 2 batches behind
    assert summary.recent_pace(landed, slow, now - 1800 + 200) is None  # too early


def test_summary_says_falling_behind_when_processing_lags_the_landing(tmp_path):
    """write_summary takes the landing times (mtimes) and processed_at on one clock."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    now = time.time()
    names = []
    for i in range(10):  # 10 movies landed over the last 20 min (30/h)
        name = f"movie_{i:05d}.tiff"
        (raw / name).write_bytes(b"x")
        os.utime(raw / name, (now - 1200 + 120 * i,) * 2)
        names.append(name)
    # one batch of 4 processed 15 min ago, nothing since: 6 wait with batches of 4
    _batch(out, "b00000", names[:4], summary.iso(now - 900))
    scan = batching.scan_movies(raw)
    written = summary.write_summary(out, raw, "running", scan, now=now)
    assert written["backlog"] == 6
    assert written["recent_acquisition_per_h"] == 30.0
    assert written["recent_processing_per_h"] == 12.0
    assert written["keeping_up"] is False  # the backlog alone (< 2 batches) said True
    _batch(out, "b00001", names[4:8], summary.iso(now - 60))  # caught up to 2 waiting
    written = summary.write_summary(out, raw, "running", scan, now=now)
    assert written["backlog"] == 2 and written["keeping_up"] is True
