"""Issue 18: the workflow never reports a stale or wrong result as ok, and stops cleanly.

With the stand-in ``cryofac`` (fake_cryofac.py) and its fault-injection hooks: a rerun
whose steps fail leaves the movies failed (never the old micrographs), a full disk is
waited out and never fails a movie, the acquisition's metadata refuse a wrong pixel
size, one controller per run folder (kill -9 included), an idle --watch pass starts no
Snakemake, outputs follow the umask.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.workflows.conftest import REPO, run_process, start_watch, write_movies

MOVIES = [f"movie_{i:03d}.mrc" for i in range(1, 9)]


def _rows(out: Path) -> dict[str, dict]:
    with (out / "movies.tsv").open() as fh:
        return {r["movie"]: r for r in csv.DictReader(fh, delimiter="\t")}


def _with(config: Path, tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(config.read_text())
    data.update(changes)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_a_rerun_that_fails_leaves_the_movies_failed_not_their_old_results(tmp_path, small_config):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_movies(raw, MOVIES[:4])
    args = (str(raw), "--out", str(out), "--cores", "2")
    first = run_process(*args, "--config", str(small_config))
    assert first.returncode == 0, first.stderr
    assert {r["status"] for r in _rows(out).values()} == {"ok"}
    assert (out / "batches/b00000/motioncorr/movie_001.mrc").exists()

    # a changed motion-correction option (here: what a new gain reference does) reruns
    # the batch, and every movie now fails as bad input
    changed = _with(small_config, tmp_path, extra={"motioncorr": "--gain-check 1"})
    calls = tmp_path / "calls.txt"
    env = {"FAKE_CRYOFAC_BAD_GAIN": "1", "FAKE_CRYOFAC_CALLS": str(calls)}
    second = run_process(*args, "--config", str(changed), env=env)
    assert second.returncode == 3, second.stderr  # finished, movies failed
    rows = _rows(out)
    assert {r["status"] for r in rows.values()} == {"failed"}
    assert rows["movie_002.mrc"]["reason"].startswith("motioncorr: gain reference is 4096x4096")
    assert not list((out / "batches/b00000/motioncorr").glob("movie_*.mrc"))  # old ones gone
    status = (out / "batches/b00000/motioncorr/status.tsv").read_text()
    assert status.count("\tfailed\t") == 4
    # CTF, picking and extraction did not run again on the old micrographs
    assert [c.split()[0] for c in calls.read_text().splitlines()] == ["motioncorr"]
    assert json.loads((out / "summary.json").read_text())["movies_failed"] == 4
    assert not (out / "batches/b00000/extract/particles.star").exists()


@pytest.mark.slow
def test_retry_failed_reruns_the_failed_batches_and_only_with_the_flag(tmp_path, small_config):
    """Movies that failed stay failed on a plain rerun (their inputs did not change);
    --retry-failed runs their batches again (with --flush too: one pass, no watch)."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_movies(raw, MOVIES[:4])
    args = (str(raw), "--out", str(out), "--cores", "2", "--config", str(small_config))
    calls = tmp_path / "calls.txt"
    bad = run_process(*args, env={"FAKE_CRYOFAC_BAD_GAIN": "1"})
    assert bad.returncode == 3, bad.stderr
    assert {r["status"] for r in _rows(out).values()} == {"failed"}
    plain = run_process(*args, env={"FAKE_CRYOFAC_CALLS": str(calls)})
    assert plain.returncode == 3, plain.stderr
    assert not calls.exists() or "motioncorr" not in calls.read_text()
    retried = run_process(
        *args, "--retry-failed", "--flush", env={"FAKE_CRYOFAC_CALLS": str(calls)}
    )
    assert retried.returncode == 0, retried.stderr
    assert "motioncorr" in calls.read_text().split()
    assert {r["status"] for r in _rows(out).values()} == {"ok"}
    assert json.loads((out / "summary.json").read_text())["movies_failed"] == 0


@pytest.mark.slow
def test_full_disk_is_waited_out_and_never_fails_a_movie(tmp_path, small_config):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_movies(raw, MOVIES[:4])
    config = _with(small_config, tmp_path, retry={"wait_s": 0.2, "limit_s": 1.5})
    full = tmp_path / "disk-full"
    full.touch()
    env = {"FAKE_CRYOFAC_DISK_FULL": str(full)}
    args = (str(raw), "--out", str(out), "--config", str(config), "--cores", "2")

    # still full after the retry limit: the job fails, no movie is marked failed
    first = run_process(*args, env=env)
    assert first.returncode == 1, first.stderr
    assert "rule motioncorr (batch=b00000)" in first.stderr
    waiting = json.loads((out / "batches/b00000/motioncorr/waiting.json").read_text())
    assert waiting["gave_up"] and "No space left on device" in waiting["reason"]
    log = (out / "logs/b00000/motioncorr.log").read_text()
    assert "waiting 0.2 s (transient error, attempt 1)" in log
    assert not (out / "batches/b00000/movies.tsv").exists()
    assert json.loads((out / "summary.json").read_text())["movies_failed"] == 0

    # space freed while the step waits: the same run goes on and processes the batch
    config = _with(small_config, tmp_path, retry={"wait_s": 0.5, "limit_s": 600})

    def free_space() -> None:
        deadline = time.time() + 120
        while not (out / "batches/b00000/motioncorr/waiting.json").exists():
            if time.time() > deadline:
                return
            time.sleep(0.05)
        full.unlink()

    (out / "batches/b00000/motioncorr/waiting.json").unlink()
    freer = threading.Thread(target=free_space)
    freer.start()
    second = run_process(str(raw), "--out", str(out), "--config", str(config), env=env)
    freer.join()
    assert second.returncode == 0, second.stderr
    assert {r["status"] for r in _rows(out).values()} == {"ok"}
    assert not (out / "batches/b00000/motioncorr/waiting.json").exists()


def _mrc_movies(raw: Path, names: list[str], pixel_size_A: float) -> None:
    import mrcfile
    import numpy as np

    raw.mkdir(parents=True, exist_ok=True)
    for name in names:
        with mrcfile.new(raw / name, overwrite=True) as mrc:
            mrc.set_data(np.zeros((2, 8, 8), np.float32))
            mrc.voxel_size = pixel_size_A
        past = time.time() - 3600
        os.utime(raw / name, (past, past))


def test_pixel_size_against_headers_and_acquisition_json_is_refused(tmp_path, small_config):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _mrc_movies(raw, MOVIES[:4], 1.5)
    wrong = _with(small_config, tmp_path, acquisition={"pixel_size_A": 1.0})
    args = (str(raw), "--out", str(out), "--config", str(wrong), "-n")
    refused = run_process(*args)
    assert refused.returncode == 1
    line = refused.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "pixel_size_A is 1 Å in the configuration but 1.5 Å in" in line
    assert "movie_001.mrc (MRC header)" in line and "--ignore-metadata-mismatch" in line
    # acquisition.json is checked too, and within 1 % is accepted
    (raw / "acquisition.json").write_text(json.dumps({"pixel_size_A": 1.5, "voltage_kV": 200}))
    volts = _with(small_config, tmp_path, acquisition={"pixel_size_A": 1.5, "voltage_kV": 300})
    refused = run_process(str(raw), "--out", str(out), "--config", str(volts), "-n")
    assert refused.returncode == 1
    assert "voltage_kV is 300 kV in the configuration but 200 kV in" in refused.stderr
    dose = _with(
        small_config, tmp_path, acquisition={"pixel_size_A": 1.5, "dose_per_frame_e_A2": 1.0}
    )
    (raw / "acquisition.json").write_text(
        json.dumps({"pixel_size_A": 1.5, "dose_per_frame_e_A2": 1.2})
    )
    refused = run_process(str(raw), "--out", str(out), "--config", str(dose), "-n")
    assert refused.returncode == 1
    assert "dose_per_frame_e_A2 is 1 e/Å² in the configuration but 1.2 e/Å² in" in refused.stderr
    close = _with(small_config, tmp_path, acquisition={"pixel_size_A": 1.51})
    assert run_process(str(raw), "--out", str(out), "--config", str(close), "-n").returncode == 0
    overridden = run_process(*args, "--ignore-metadata-mismatch")
    assert overridden.returncode == 0, overridden.stderr


def test_eer_and_unwritable_out_are_one_line_errors(tmp_path, small_config):
    raw = tmp_path / "raw"
    write_movies(raw, ["a.tiff", "b.eer"])
    result = run_process(str(raw), "--out", str(tmp_path / "o"), "--config", str(small_config))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "b.eer: EER movies are not supported (1 found)" in result.stderr.strip()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_process(
        str(raw), "--out", str(blocker / "out"), "--config", str(small_config), "-n"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "cannot write the run folder" in result.stderr


def _processes_on(folder: Path) -> list[str]:
    """Command lines of live processes that name ``folder`` or run in it (Snakemake, steps)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split(") ")[-1][:1]
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        inside = str(folder) in cmdline or cwd == str(folder) or cwd.startswith(f"{folder}/")
        if inside and state != "Z":
            found.append(cmdline)
    return found


def _wait(condition, timeout: float = 300) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_kill_9_of_the_controller_never_leaves_two_snakemakes(tmp_path, small_config):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_movies(raw, MOVIES)
    args = [str(raw), "--out", str(out), "--config", str(small_config), "--cores", "2"]
    controller = subprocess.Popen(
        [sys.executable, "-m", "cryofac.cli", "process", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env={**os.environ, "FAKE_CRYOFAC_SLEEP": "3"},
    )
    assert _wait(lambda: any("fake_cryofac" in c for c in _processes_on(out)))
    controller.kill()  # SIGKILL: no handler runs
    controller.wait()
    # while anything of the killed run lives, a new controller refuses (never unlocks)
    second = run_process(*args)
    if second.returncode != 0:
        assert "still running here" in second.stderr or "another" in second.stderr
    # its Snakemake and jobs die with it (PR_SET_PDEATHSIG), within seconds
    assert _wait(lambda: not _processes_on(out), timeout=60), _processes_on(out)
    again = run_process(*args)
    assert again.returncode == 0, again.stderr
    assert {r["status"] for r in _rows(out).values()} == {"ok"}


def _watch_until_a_reconstruction_runs(tmp_path: Path, small_config) -> tuple:
    """``cryofac process --watch`` on two batches (enough particles for a reconstruction)
    whose (fake) reconstruction sleeps for 10 minutes; returns (raw, out, controller) once
    that reconstruction runs."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_movies(raw, MOVIES)
    controller = start_watch(
        raw, out, small_config, 0.5, subprocess.DEVNULL, env={"FAKE_CRYOFAC_RECON_SLEEP": "600"}
    )
    running = _wait(
        lambda: any("fake_cryofac.py reconstruct" in c for c in _processes_on(out)), 600
    )
    if not running:
        controller.kill()
    assert running, "the reconstruction never started"
    return raw, out, controller


@pytest.mark.slow
def test_watch_keeps_preprocessing_during_a_reconstruction_then_sigterm_stops_all(
    tmp_path, small_config
):
    raw, out, controller = _watch_until_a_reconstruction_runs(tmp_path, small_config)
    try:
        write_movies(raw, [f"movie_{i:03d}.mrc" for i in range(9, 13)])
        # the new batch is processed while the reconstruction still runs

        def summary() -> dict:
            return json.loads((out / "summary.json").read_text())

        assert _wait(lambda: summary()["movies_processed"] == 12, 600)
        assert any("fake_cryofac.py reconstruct" in c for c in _processes_on(out))
        assert not list((out / "reconstruct").glob("p*/result.json"))
        assert summary()["state"] == "running"

        def snakemake_logs() -> int:
            return len(list((out / ".snakemake" / "log").glob("*.snakemake.log")))

        # the pass that finished the new batch may be followed by one more that sees its
        # outputs; once the count has settled, idle passes start no Snakemake at all
        seen = [snakemake_logs()]

        def settled() -> bool:
            time.sleep(2.0)  # four passes at --interval 0.5
            seen.append(snakemake_logs())
            return seen[-1] == seen[-2]

        assert _wait(settled, 120), seen
        time.sleep(3)  # several more idle passes: no Snakemake started, nothing written
        assert snakemake_logs() == seen[-1]
        assert seen[-1] - seen[0] <= 1, seen  # at most the one catch-up pass
        controller.send_signal(signal.SIGTERM)
        controller.communicate(timeout=60)
    finally:
        if controller.poll() is None:
            controller.kill()
    assert _wait(lambda: not _processes_on(out), timeout=30), _processes_on(out)


def test_outputs_follow_the_umask(tmp_path):
    from cryofac.fileio import atomic_write

    previous = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a.txt", "x")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        path = atomic_write(tmp_path / "b.bin", b"x")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(previous)
    assert (tmp_path / "a.txt").read_text() == "x"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_after_the_stop_file_the_last_movies_do_not_wait_for_the_reconstruction(
    tmp_path, small_config
):
    raw, out, controller = _watch_until_a_reconstruction_runs(tmp_path, small_config)
    try:
        write_movies(raw, ["movie_009.mrc", "movie_010.mrc"])  # an incomplete last batch
        (out / "STOP").write_text("acquisition finished\n")
        # the flush pass processes them while the reconstruction still runs
        assert _wait(lambda: (out / "batches" / "b00002" / "movies.tsv").exists(), 600)
        assert any("fake_cryofac.py reconstruct" in c for c in _processes_on(out))
        assert not list((out / "reconstruct").glob("p*/result.json"))
    finally:
        controller.send_signal(signal.SIGTERM)
        controller.communicate(timeout=60)
