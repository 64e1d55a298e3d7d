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
