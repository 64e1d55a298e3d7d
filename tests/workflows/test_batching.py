"""Batch membership, movie discovery and the particle-count schedule."""

from __future__ import annotations

import os
import time

import pytest

from workflows import batching


def _touch(path, age_s: float = 3600.0) -> None:
    path.write_bytes(b"x")
    past = time.time() - age_s
    os.utime(path, (past, past))


def test_scan_filters_patterns_temp_names_gain_and_quiet_period(tmp_path):
    for name in ["m_002.tif", "m_001.tif", "m_003.mrc", "gain.mrc", ".m_004.tif", "m_005.tif.tmp"]:
        _touch(tmp_path / name)
    _touch(tmp_path / "m_006.tif", age_s=1.0)  # still being written
    (tmp_path / "truth").mkdir()
    _touch(tmp_path / "truth" / "m_007.tif")
    scan = batching.scan_movies(tmp_path, quiet_period_s=30)
    assert scan.eligible == ["m_001.tif", "m_002.tif", "m_003.mrc"]
    assert scan.recent == ["m_006.tif"]
    assert scan.first_mtime is not None and scan.last_mtime >= scan.first_mtime


def test_only_complete_batches_unless_flush():
    movies = [f"m{i:03d}.tif" for i in range(10)]
    batches, waiting = batching.plan_batches({}, movies, batch_size=4)
    assert list(batches) == ["b00000", "b00001"]
    assert batches["b00001"] == movies[4:8]
    assert waiting == movies[8:]
    batches, waiting = batching.plan_batches({}, movies, batch_size=4, flush=True)
    assert batches["b00002"] == movies[8:] and waiting == []


def test_existing_batches_never_change_when_earlier_names_arrive_late():
    existing = {"b00000": ["m002.tif", "m003.tif"], "b00001": ["m005.tif", "m006.tif"]}
    # m001 and m004 landed late (sort before members of existing batches)
    eligible = ["m001.tif", "m002.tif", "m003.tif", "m004.tif", "m005.tif", "m006.tif"]
    batches, waiting = batching.plan_batches(existing, eligible, batch_size=2)
    assert batches["b00000"] == existing["b00000"]
    assert batches["b00001"] == existing["b00001"]
    assert batches["b00002"] == ["m001.tif", "m004.tif"]
    assert waiting == []


def test_manifests_round_trip(tmp_path):
    for name, movies in {"b00000": ["a.tif", "b.tif"], "b00001": ["c.tif"]}.items():
        (tmp_path / "batches" / name).mkdir(parents=True)
        (tmp_path / "batches" / name / "movies.txt").write_text("\n".join(movies) + "\n")
    (tmp_path / "batches" / "notes").mkdir()
    (tmp_path / "batches" / "b00002").mkdir()  # no manifest yet: not a batch
    assert batching.read_manifests(tmp_path) == {
        "b00000": ["a.tif", "b.tif"],
        "b00001": ["c.tif"],
    }


def test_particle_buckets_grow_geometrically():
    assert batching.particle_buckets(1000, 1.5, 999) == []
    assert batching.particle_buckets(1000, 1.5, 5100) == [1000, 1500, 2250, 3375, 5063]
    assert batching.reconstruction_target(1000, 1.5, 3000) == 2250
    assert batching.reconstruction_target(1000, 1.5, 3000, final=True) == 3000
    assert batching.reconstruction_target(1000, 1.5, 999, final=True) is None
    assert batching.particle_buckets(2, 1.01, 5) == [2, 3, 4, 5]  # always grows by ≥ 1
    with pytest.raises(ValueError):
        batching.particle_buckets(10, 1.0, 100)


def test_stem_and_batch_names():
    assert batching.stem("/raw/FoilHole_1_Data_2_fractions.tiff") == "FoilHole_1_Data_2_fractions"
    assert batching.stem("movie.mrcs") == "movie"
    assert batching.batch_index(batching.batch_name(42)) == 42
    with pytest.raises(ValueError):
        batching.batch_index("logs")


def test_scan_and_plan_of_5000_names_is_fast(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(5000):
        (raw / f"FoilHole_{i:06d}_fractions.tiff").touch()
    start = time.perf_counter()
    scan = batching.scan_movies(raw)
    batches, _ = batching.plan_batches({}, scan.eligible, 100)
    elapsed = time.perf_counter() - start
    assert len(batches) == 50
    assert elapsed < 2.0
