"""Issue 6's bar with the real steps: a simulated acquisition through `cryofac process`.

12 simulated movies -> particles and a map;
the second run does nothing; 4 more movies -> the third run processes only their
batch plus the downstream steps; that third run is killed (SIGTERM) mid-run and
the rerun gives the same results as an uninterrupted third run on a copy; every path
in every STAR and .cs file of the run folder resolves from it (test_paths.py).
Small sizes: 512² movies of 10 frames at 2 Å/pixel, batches of 4.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.workflows.conftest import REPO, run_process
from tests.workflows.test_paths import check_run_folder_paths
from tests.workflows.test_workflow import _digests, _outputs

pytestmark = pytest.mark.slow


def _simulate(raw: Path, movies: int, start: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cryofac.cli", "simulate", "acquisition", str(raw)]
        + ["--movies", str(movies), "--start-index", str(start), "--size", "512"]
        + ["--frames", "10", "--pixel-size", "2.0", "--dose-per-frame", "5"]
        + ["--seed", "11", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    past = time.time() - 600  # past the quiet period
    for path in raw.glob("*.tiff"):
        os.utime(path, (past, past))


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "batch_size": 4,
                "movies": {"quiet_period_s": 0},
                # a map from the first 12 movies, a new one after 4 more
                "downstream": {"min_particles": 100, "growth": 1.2},
                "motioncorr": {"patches": [1, 1]},
                "extraction": {"box_px": 96},
                "extract_bin": 1.5,  # 64-pixel boxes at 3 Å/pixel for the reconstruction
                "resources": {
                    step: {"threads": 1} for step in ("motioncorr", "ctf", "pick", "extract")
                }
                | {"reconstruct": {"threads": 2}},
                # a quick reconstruction: the bar here is the workflow, not the map
                "extra": {
                    "reconstruct": "--classes 2 --class-iterations 2 --abinitio-iterations 4"
                    " --refine-iterations 2"
                },
            }
        )
    )
    return path


def test_simulated_acquisition_incremental_killed_and_resumed(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    args = ("--out", str(out), "--config", str(_config(tmp_path)), "--cores", "2")
    _simulate(raw, 12, 0)
    corrupt = sorted(raw.glob("*.tiff"))[5]  # second movie of the second batch
    stat = corrupt.stat()
    corrupt.write_bytes(b"II*\x00" + bytes(1000))  # a TIFF header and nothing else
    os.utime(corrupt, (stat.st_atime, stat.st_mtime))

    first = run_process(str(raw), *args, timeout=600)
    assert first.returncode == 3, first.stderr  # finished; the corrupt movie failed
    assert f"{corrupt.name}: motioncorr: " in first.stderr
    args = (*args, "--allow-failed-movies")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["movies_seen"] == 12 and summary["batches_done"] == 3
    rows = {r["movie"]: r for r in csv.DictReader((out / "movies.tsv").open(), delimiter="\t")}
    assert rows[corrupt.name]["status"] == "failed"
    assert summary["movies_failed"] >= 1 and summary["movies_processed"] >= 10, rows
    batch = [r for r in rows.values() if r["batch"] == rows[corrupt.name]["batch"]]
    assert sum(int(r["n_particles"]) > 0 for r in batch) >= 2  # the rest of its batch went on
    assert summary["particles"] >= 100
    assert summary["outputs"]["map"] is not None and summary["resolution_A"] is not None
    assert (out / summary["outputs"]["map"]).exists()

    before = _outputs(out)
    second = run_process(str(raw), *args)
    assert second.returncode == 0, second.stderr
    assert "Nothing to be done" in (out / ".cryofac" / "snakemake.out").read_text()
    assert _outputs(out) == before

    _simulate(raw, 4, 12)
    reference = tmp_path / "reference"
    shutil.copytree(out, reference, symlinks=True)
    ref_args = ("--out", str(reference), *args[2:])
    uninterrupted = run_process(str(raw), *ref_args, timeout=600)
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    child = subprocess.Popen(
        [sys.executable, "-m", "cryofac.cli", "process", str(raw), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    started = out / "batches" / "b00003" / "motioncorr" / "status.tsv"
    deadline = time.time() + 300
    while not started.exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode != 0 and "stopped by signal SIGTERM" in stderr
    assert not (out / "batches" / "b00003" / "movies.tsv").exists()  # stopped mid-run

    resumed = run_process(str(raw), *args, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    after = _outputs(out)
    old_batches = [
        k for k in before if k.startswith(("batches/b00000", "batches/b00001", "batches/b00002"))
    ]
    assert old_batches and all(after[k] == before[k] for k in old_batches)  # not redone
    assert _digests(out) == _digests(reference)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["movies_seen"] == 16 and summary["batches_done"] == 4
    maps = sorted(p.parent.name for p in (out / "reconstruct").glob("p*/result.json"))
    assert len(maps) == 2, maps  # one more reconstruction at the larger particle count
    # every path of every STAR and .cs file resolves from the run folder (issue 18)
    checked = check_run_folder_paths(out)
    assert checked["files"]["cs"] >= 6 and checked["files"]["star"] >= 40, checked
    for field in ("rlnImageName", "rlnMicrographName", "rlnMicrographMetadata"):
        assert field in checked["fields"], checked
    assert {"blob/path", "location/micrograph_path"} <= set(checked["fields"]), checked
