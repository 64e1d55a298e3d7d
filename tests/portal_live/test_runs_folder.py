"""Run-folder reader and plots on a synthetic run with known statistics."""

from __future__ import annotations

import json

import pytest

from portal.runs.folder import (
    RunFolderError,
    fsc_resolution_A,
    read_classes2d,
    read_fsc,
    read_movies,
    read_run,
    read_summary,
    safe_join,
)
from portal.runs.plots import PLOT_NAMES, PlotCache, metric_values
from tests.portal_live.runfolder_fixture import make_run


def test_read_run_counts_and_per_movie_values(tmp_path):
    run = read_run(make_run(tmp_path / "run", n_movies=12, failed=(3,)))
    s = run.summary
    assert (s.movies_seen, s.movies_processed, s.movies_failed) == (12, 11, 1)
    assert s.state == "running"
    assert s.keeping_up is True  # backlog 0
    assert len(run.movies) == 12
    bad = [m for m in run.movies if not m.ok]
    assert [m.movie for m in bad] == ["raw/movie_0003.tiff"]
    m5 = run.movies[5]
    assert m5.defocus_mean_A == pytest.approx(10000 + 500)
    assert m5.n_particles == 105
    assert m5.stem == "movie_0005"
    assert run.output_path("map").name == "map.mrc"
    assert run.output_path("particles_cs") is None


def test_keeping_up_uses_rates_when_backlogged(tmp_path):
    root = make_run(tmp_path / "run")
    data = json.loads((root / "summary.json").read_text())
    data.update(movies_seen=500, movies_processed=100, processing_rate_per_h=300.0)
    (root / "summary.json").write_text(json.dumps(data))
    s = read_summary(root)
    assert s.backlog == 399
    assert s.keeping_up is False
    data["processing_rate_per_h"] = 480.0
    (root / "summary.json").write_text(json.dumps(data))
    assert read_summary(root).keeping_up is True


def test_latest_thumbnails_are_the_newest_processed_movie(tmp_path):
    run = read_run(make_run(tmp_path / "run", n_movies=8, failed=()))
    mic, ps = run.latest_thumbnails()
    assert mic.name == "movie_0007_mic.png"
    assert ps.name == "movie_0007_ps.png"


@pytest.mark.parametrize(
    "mutation, message",
    [
        ({"schema": "other/2"}, "schema"),
        ({"state": "exploded"}, "state"),
        ({"movies_seen": "many"}, "movies_seen"),
        ({"updated_at": "yesterday"}, "ISO 8601"),
        ({"warnings": "check the map"}, "warnings must be a list"),
    ],
)
def test_malformed_summary_is_a_one_line_error(tmp_path, mutation, message):
    root = make_run(tmp_path / "run", with_outputs=False)
    data = json.loads((root / "summary.json").read_text())
    data.update(mutation)
    (root / "summary.json").write_text(json.dumps(data))
    with pytest.raises(RunFolderError, match=message) as info:
        read_summary(root)
    assert "\n" not in str(info.value)
    assert "summary.json" in str(info.value)


def test_missing_summary_and_missing_movies(tmp_path):
    with pytest.raises(RunFolderError, match="does not exist"):
        read_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match="no run summary yet"):
        read_run(tmp_path / "empty")
    assert read_movies(tmp_path / "empty" / "movies.tsv") == []


def test_output_paths_cannot_escape_the_run_folder(tmp_path):
    root = make_run(tmp_path / "run", with_outputs=False)
    (tmp_path / "secret.txt").write_text("x")
    data = json.loads((root / "summary.json").read_text())
    data["outputs"]["map"] = "../secret.txt"
    (root / "summary.json").write_text(json.dumps(data))
    run = read_run(root)
    assert run.output_path("map") is None
    assert safe_join(root, "/etc/passwd") is None


def test_fsc_resolution_matches_ground_truth(tmp_path):
    run = read_run(make_run(tmp_path / "run"))
    curve = read_fsc(run.output_path("fsc_star"))
    assert curve[0][1] > 0.99
    assert fsc_resolution_A(curve) == pytest.approx(4.0, abs=0.15)


def test_class_averages_sorted_by_count(tmp_path):
    run = read_run(make_run(tmp_path / "run"))
    classes = read_classes2d(run.output_path("classes2d"))
    assert [c.index for c in classes] == [2, 4, 6, 3, 1, 5]
    assert [c.n_particles for c in classes][:2] == [60, 30]
    assert classes[0].image.shape == (12, 12)


def test_metric_values_skip_failed_movies_and_scale_units(tmp_path):
    run = read_run(make_run(tmp_path / "run", n_movies=6, failed=(2,)))
    defocus = metric_values(run.movies, "defocus")
    assert [i for i, _ in defocus] == [0, 1, 3, 4, 5]
    assert defocus[0][1] == pytest.approx(1.0)  # 10000 Å = 1 µm


def test_every_plot_renders_and_cache_rerenders_only_on_change(tmp_path):
    root = make_run(tmp_path / "run")
    run = read_run(root)
    cache = PlotCache()
    for name in PLOT_NAMES:
        data, media = cache.get(run, name)
        assert len(data) > 200
        if media == "image/svg+xml":
            assert data.lstrip().startswith(b"<?xml") and b"<svg" in data
        else:
            assert data.startswith(b"\x89PNG")
    renders = cache.renders
    assert renders == len(PLOT_NAMES)
    cache.get(run, "time_drift")
    assert cache.renders == renders  # cached
    # The workflow appends a movie: movies.tsv changes -> re-render once.
    import os
    import time

    path = root / "movies.tsv"
    with path.open("a") as handle:
        handle.write(path.read_text().splitlines()[-1].replace("movie_0011", "movie_0012") + "\n")
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    run2 = read_run(root)
    cache.get(run2, "time_drift")
    assert cache.renders == renders + 1
    cache.get(run2, "fsc")  # the FSC file did not change: still cached
    assert cache.renders == renders + 1
    with pytest.raises(KeyError):
        cache.get(run2, "nonsense")


def test_plots_of_an_empty_run_say_so(tmp_path):
    root = make_run(tmp_path / "run", n_movies=0, failed=(), with_outputs=False)
    run = read_run(root)
    cache = PlotCache()
    svg, _ = cache.get(run, "time_drift")
    assert b"no movies processed yet" in svg
    svg, _ = cache.get(run, "fsc")
    assert b"no map yet" in svg


def test_processing_summary_for_the_session_api(tmp_path):
    from portal.runs.progress import processing_summary

    assert processing_summary(None) == {}
    assert processing_summary(str(tmp_path / "missing"))["state"] == "unreadable"
    root = make_run(tmp_path / "run", n_movies=6, failed=(2,))
    summary = processing_summary(str(root))
    assert summary["movies_processed"] == 5 and summary["movies_failed"] == 1
    # ok movies 0,1,3,4,5: motion 1,2,4,5,6 Å -> median 4; defocus 10000+100 i -> 10300
    assert summary["median_total_motion_A"] == 4.0
    assert summary["median_defocus_A"] == 10300.0
    assert summary["median_particles_per_micrograph"] == 103.0
    assert summary["resolution_A"] == 4.0 and summary["keeping_up"] is True


def test_prerendered_class_gallery_and_slices_are_served_as_is(tmp_path):
    root = make_run(tmp_path / "run", with_outputs=False)
    data = json.loads((root / "summary.json").read_text())
    png = (root / "thumbnails").glob("*_mic.png").__next__().read_bytes()
    (root / "classes2d.png").write_bytes(png)
    (root / "slices.png").write_bytes(png)
    data["outputs"].update(classes2d="classes2d.png", slices_png="slices.png")
    (root / "summary.json").write_text(json.dumps(data))
    run = read_run(root)
    cache = PlotCache()
    assert cache.get(run, "classes2d") == (png, "image/png")
    assert cache.get(run, "slices") == (png, "image/png")


def test_reader_agrees_with_the_workflow_writer(tmp_path):
    """The run-folder contract seen from both sides: workflows writes, portal reads."""
    from cryofac.run_folder import MOVIE_COLUMNS, OUTPUT_KEYS
    from workflows import summary as summary_writer

    assert tuple(summary_writer.MOVIE_COLUMNS) == MOVIE_COLUMNS
    assert tuple(summary_writer.OUTPUT_FILES) == OUTPUT_KEYS
    raw = tmp_path / "raw"
    raw.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    summary_writer.write_summary(out, raw, "running")
    run = read_run(out)
    assert run.summary.state == "running"
    assert run.summary.movies_processed == 0 and run.movies == []
    assert run.summary.updated_at is not None and run.summary.updated_at.tzinfo is not None
    assert run.summary.warnings == ()
    # the reconstruction's warnings reach the portal through summary.json
    recon = out / "reconstruct" / "p0000300"
    recon.mkdir(parents=True)
    (recon / "result.json").write_text(json.dumps({"resolution_A": 7.5, "warnings": ["w1"]}))
    summary_writer.write_summary(out, raw, "complete")
    run = read_run(out)
    assert run.summary.resolution_A == 7.5 and run.summary.warnings == ("w1",)


def test_run_cache_rereads_only_when_files_change(tmp_path):
    import os

    from portal.runs.folder import RunCache

    root = make_run(tmp_path / "run", with_outputs=False)
    cache = RunCache()
    first = cache.get(root)
    assert cache.get(root) is first and cache.reads == 1
    table = root / "movies.tsv"
    table.write_text(table.read_text() + table.read_text().splitlines()[-1] + "\n")
    os.utime(table, ns=(1, 1))  # a new version, whatever the clock resolution
    second = cache.get(root)
    assert cache.reads == 2 and len(second.movies) == len(first.movies) + 1


def test_binned_median_is_exact_on_known_data():
    import numpy as np

    from portal.runs.plots import binned_median

    x = np.arange(1, 101)
    y = np.repeat([1.0, 5.0, 2.0, 8.0], 25)
    y[::7] = 100.0  # outliers do not move a median
    centres, medians = binned_median(x, y, max_bins=4)
    assert np.allclose(centres, [13, 38, 63, 88])
    assert np.allclose(medians, [1.0, 5.0, 2.0, 8.0])
    assert binned_median(x[:6], y[:6])[0].size == 0  # too few points for a trend line


def test_a_garbled_row_is_skipped_not_the_whole_table(tmp_path, caplog):
    import logging

    root = make_run(tmp_path / "run", n_movies=5, failed=(), with_outputs=False)
    table = root / "movies.tsv"
    lines = table.read_text().splitlines()
    cells = lines[3].split("\t")
    cells[3] = "lots"  # total_motion_A of the third movie
    lines[3] = "\t".join(cells)
    lines.append(lines[1].replace("movie_0000", "movie_0099").replace("2026-03-02T", "Tuesday "))
    table.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="portal.runs.folder"):
        movies = read_movies(table)
    assert [m.stem for m in movies] == ["movie_0000", "movie_0001", "movie_0003", "movie_0004"]
    assert "movies.tsv:4" in caplog.text and "movies.tsv:7" in caplog.text
