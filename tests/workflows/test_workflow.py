"""The Snakemake workflow itself: lint, dry runs (local and SLURM), config errors,
and the orchestration end to end with a stand-in ``cryofac`` (fake_cryofac.py)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workflows.conftest import REPO, run_process, start_watch, write_movies
from workflows.cli import SNAKEFILE

MOVIES = [f"movie_{i:03d}.mrc" for i in range(1, 13)]


def _snakemake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def _empty_acquisition(tmp_path: Path, n: int) -> Path:
    raw = tmp_path / "raw"
    write_movies(raw, [f"FoilHole_{i:05d}_fractions.tiff" for i in range(n)])
    (raw / "gain.mrc").write_bytes(b"")
    return raw


def test_lint_is_clean(tmp_path):
    raw = _empty_acquisition(tmp_path, 3)
    result = _snakemake(
        "--directory", str(tmp_path / "out"), "--config", f"raw_dir={raw}", "--lint"
    )
    assert result.returncode == 0, result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def _job_counts(text: str) -> dict[str, int]:
    """Rows of the first ``job  count`` table in Snakemake's (or our) dry-run output."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() == ["job", "count"])
    counts = {}
    for line in lines[start + 2 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def test_dry_run_plans_complete_batches_only(tmp_path):
    raw = _empty_acquisition(tmp_path, 10)
    result = run_process(str(raw), "--out", str(tmp_path / "out"), "--batch-size", "4", "-n")
    assert result.returncode == 0, result.stderr
    counts = _job_counts(result.stdout)
    assert counts["motioncorr"] == 2  # 10 movies -> two full batches, 2 waiting
    assert counts["extract"] == 2 and counts["gather_particles"] == 1
    flushed = run_process(
        str(raw), "--out", str(tmp_path / "out"), "--batch-size", "4", "-n", "--flush"
    )
    counts = _job_counts(flushed.stdout)
    assert counts["motioncorr"] == 3
    assert not (tmp_path / "out" / "batches").exists()  # a dry run writes no batch


def test_slurm_profile_dry_run_requests_gpus_and_groups_batches(tmp_path):
    raw = _empty_acquisition(tmp_path, 8)
    profile = Path(SNAKEFILE).parent / "profiles" / "slurm"
    result = _snakemake(
        "--directory",
        str(tmp_path / "out"),
        "--config",
        f"raw_dir={raw}",
        "batch_size=4",
        "--profile",
        str(profile),
        # the profile's resources are workflow configuration (cryofac process adds it)
        "--configfile",
        str(profile / "cryofac.yaml"),
        "--dry-run",
    )
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert _job_counts(text)["motioncorr"] == 2
    motioncorr = text[text.index("rule motioncorr:") :].split("\n\n")[0]
    assert "gpu=1" in motioncorr and "slurm_partition=gpu" in motioncorr


def test_bad_config_is_one_line(tmp_path):
    raw = _empty_acquisition(tmp_path, 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: 0\n")
    result = run_process(str(raw), "--out", str(tmp_path / "out"), "--config", str(bad))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "bad.yaml: batch_size" in result.stderr
    bad.write_text("acquisition: {pixel_size_A: -1}\n")
    result = run_process(str(raw), "--out", str(tmp_path / "out"), "--config", str(bad))
    assert result.returncode == 1 and "pixel_size_A" in result.stderr
    assert "Traceback" not in result.stderr


def _outputs(out: Path) -> dict[str, float]:
    """mtime of every file the workflow wrote (not Snakemake's bookkeeping, not the summary)."""
    skip = {".snakemake", ".cryofac", "summary.json", "movies.tsv"}
    return {
        str(p.relative_to(out)): p.stat().st_mtime_ns
        for p in out.rglob("*")
        if p.is_file() and not (set(p.relative_to(out).parts) & skip)
    }


def _calls(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _assert_reconstruct_memory(out: Path, map_path: str) -> None:
    from workflows.resources import node_mem_mb, reconstruct_mem_mb

    n = int(map_path.split("/")[1][1:])
    expected = min(reconstruct_mem_mb(n, 256), node_mem_mb())  # pipeline.yaml's box
    log = (out / ".cryofac" / "reconstruct.out").read_text()
    assert f"mem_mb={expected}," in log, log


@pytest.mark.slow
def test_orchestration_incremental_and_failures(tmp_path, small_config):
    """12 movies (one corrupt) -> map; rerun does nothing; 4 more -> only they + downstream."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    calls = tmp_path / "calls.txt"
    env = {"FAKE_CRYOFAC_CALLS": str(calls)}
    write_movies(raw, MOVIES, corrupt=("movie_006.mrc",))
    args = (str(raw), "--out", str(out), "--config", str(small_config), "--cores", "2")

    first = run_process(*args, env=env)
    # finished, but a movie failed: exit 3 with the reason, progress lines without a tty
    assert first.returncode == 3, first.stderr
    assert "1 of 12 movies failed (first: movie_006.mrc: motioncorr: not an MRC" in first.stderr
    assert "pass done: 11 movies processed, 1 failed" in first.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == "cryofac-run-summary/1"
    assert summary["state"] == "idle"
    assert (summary["movies_seen"], summary["movies_processed"], summary["movies_failed"]) == (
        12,
        11,
        1,
    )
    assert summary["batches_done"] == summary["batches_total"] == 3
    rows = list(csv.DictReader((out / "movies.tsv").open(), delimiter="\t"))
    assert [r["movie"] for r in rows] == MOVIES
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["movie"] for r in failed] == ["movie_006.mrc"]
    assert failed[0]["reason"] == "motioncorr: not an MRC or TIFF movie"
    assert all(r["reason"] == "" for r in rows if r["status"] == "ok")
    assert summary["particles"] == sum(int(r["n_particles"]) for r in rows) >= 20
    assert summary["outputs"]["map"].startswith("reconstruct/p")
    thumbnails = sorted(p.name for p in (out / "thumbnails").iterdir())
    assert len(thumbnails) == 2 * 11 and "movie_001_mic.png" in thumbnails
    assert summary["resolution_A"] > 0
    # the portal's reader accepts what we wrote (the run-folder contract)
    from portal.runs import folder

    read = folder.read_summary(out)
    assert (read.state, read.movies_failed, read.particles) == ("idle", 1, summary["particles"])
    stats = folder.read_movies(out / "movies.tsv")
    assert [m.batch for m in stats] == ["b00000"] * 4 + ["b00001"] * 4 + ["b00002"] * 4
    assert stats[0].defocus_u_A > 0 and stats[0].processed_at is not None

    first_calls = _calls(calls)
    assert sum(c.startswith("motioncorr") for c in first_calls) == 3
    assert sum(c.startswith("reconstruct") for c in first_calls) == 1
    # the reconstruction asks for the memory its particles x box need (issue 18)
    _assert_reconstruct_memory(out, summary["outputs"]["map"])

    before = _outputs(out)
    second = run_process(*args, "--allow-failed-movies", env=env)
    assert second.returncode == 0, second.stderr
    assert "Warning: 1 of 12 movies failed" in second.stderr
    assert _calls(calls) == first_calls  # no step ran
    assert _outputs(out) == before

    write_movies(raw, [f"movie_{i:03d}.mrc" for i in range(13, 17)])
    third = run_process(*args, "--allow-failed-movies", env=env)
    assert third.returncode == 0, third.stderr
    new_calls = _calls(calls)[len(first_calls) :]
    assert [c.split()[0] for c in new_calls] == [
        "motioncorr",
        "ctf",
        "pick",
        "extract",
        "reconstruct",
    ]
    assert new_calls[0].split()[1:] == [f"movie_{i:03d}.mrc" for i in range(13, 17)]
    after = _outputs(out)
    unchanged = [
        k for k in before if k.startswith("batches/b0000") and not k.startswith("batches/b00003")
    ]
    assert all(after[k] == before[k] for k in unchanged)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["movies_processed"] == 15 and summary["batches_done"] == 4
    old_map = json.loads((out / before_map(before)).read_text())
    new_map = json.loads((out / Path(summary["outputs"]["map"]).parent / "result.json").read_text())
    assert new_map["particles"] > old_map["particles"]


def before_map(files: dict[str, float]) -> str:
    return next(k for k in files if k.startswith("reconstruct/") and k.endswith("result.json"))


#: fields that record when or how long, or are random per run by design (cryoSPARC uids)
VOLATILE = {"seconds", "cpu_seconds", "timings", "history", "uid"}


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _digest(path: Path) -> str:
    """sha256 of a result's content: the file's bytes, except that MRC is compared by data
    and voxel size and STAR without comments (both carry the time of writing), JSON and
    .npz without timings, cryoSPARC .cs without its random per-run uids."""
    import hashlib

    if path.suffix in {".mrc", ".mrcs"}:
        import mrcfile

        with mrcfile.open(path, permissive=True) as mrc:
            content = mrc.data.tobytes() + str(mrc.voxel_size).encode()
    elif path.suffix == ".star":
        lines = path.read_bytes().splitlines(keepends=True)
        content = b"".join(line for line in lines if not line.startswith(b"#"))
    elif path.suffix == ".json":
        content = json.dumps(_strip(json.loads(path.read_text())), sort_keys=True).encode()
    elif path.suffix == ".npz":
        import numpy as np

        with np.load(path, allow_pickle=False) as data:
            content = b"".join(
                k.encode() + data[k].tobytes() for k in sorted(data.files) if k not in VOLATILE
            )
    elif path.suffix == ".cs":
        from cryosparc.dataset import Dataset

        data = Dataset.load(path)
        content = b"".join(
            f.encode() + ("\n".join(map(str, data[f])).encode())
            for f in sorted(data.fields())
            if f != "uid"
        )
    else:
        content = path.read_bytes()
    return hashlib.sha256(content).hexdigest()


def _digests(out: Path) -> dict[str, str]:
    """Digest of every result file (not logs, benchmarks, bookkeeping or timestamps).

    Bookkeeping includes a reconstruction's ``progress.json`` (times, ETA) and its stage
    ``*.key`` files, which hash the stacks' paths and modification times: they tell
    whether a stage may be reused, not what it computed (the maps are compared)."""
    skip = {".snakemake", ".cryofac", "logs", "benchmarks", "summary.json", "movies.tsv"}
    return {
        str(p.relative_to(out)): _digest(p)
        for p in sorted(out.rglob("*"))
        if p.is_file()
        and not (set(p.relative_to(out).parts) & skip)
        and not (p.suffix == ".key" or p.name == "progress.json")
    }


@pytest.mark.slow
def test_sigterm_mid_run_then_rerun_gives_identical_outputs(tmp_path, small_config):
    import os
    import signal
    import time

    raw = tmp_path / "raw"
    write_movies(raw, MOVIES[:8])
    reference = tmp_path / "reference"
    base = ("--config", str(small_config), "--cores", "2")
    done = run_process(str(raw), "--out", str(reference), *base)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, "-m", "cryofac.cli", "process", str(raw), "--out", str(out), *base],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "FAKE_CRYOFAC_SLEEP": "2"},
    )
    deadline = time.time() + 120
    first_batch = out / "batches" / "b00000" / "motioncorr" / "status.tsv"
    while not first_batch.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # some later jobs are running now
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode != 0
    assert "stopped by signal SIGTERM" in stderr and "Traceback" not in stderr
    assert json.loads((out / "summary.json").read_text())["state"] == "idle"
    assert not list((out / ".snakemake" / "locks").glob("*"))
    assert not (out / "reconstruct").exists()  # it really stopped mid-run

    again = run_process(str(raw), "--out", str(out), *base)
    assert again.returncode == 0, again.stderr
    assert _digests(out) == _digests(reference)
    assert len(_digests(out)) > 20


@pytest.mark.slow
def test_watch_processes_movies_as_they_land_until_the_stop_file(tmp_path, small_config):
    import time

    raw, out = tmp_path / "raw", tmp_path / "out"
    write_movies(raw, MOVIES[:4])
    child = start_watch(raw, out, small_config, 1, subprocess.PIPE)

    def wait_for(path: Path, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while not path.exists():
            assert child.poll() is None, child.communicate()[1]
            assert time.time() < deadline, f"{path} never appeared"
            time.sleep(0.3)

    try:
        wait_for(out / "batches" / "b00000" / "movies.tsv")
        write_movies(raw, MOVIES[4:10])  # one more full batch and 2 movies waiting
        wait_for(out / "batches" / "b00001" / "movies.tsv")
        assert not (out / "batches" / "b00002").exists()  # incomplete batch waits
        (out / "STOP").touch()
        _, stderr = child.communicate(timeout=180)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, stderr
    assert (out / "batches" / "b00002" / "movies.txt").read_text().split() == MOVIES[8:10]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "complete"
    assert summary["movies_processed"] == 10
    assert summary["outputs"]["map"] is not None
