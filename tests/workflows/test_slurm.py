"""The workflow on a real SLURM cluster (slurmctld, slurmd, slurmdbd; no fake sbatch).

The cluster is the single-node one of ``workflows/cluster/slurm-up.sh`` (``.ci/run``
starts it): partitions ``cpu`` and ``gpu`` (count-only GPUs), account ``cryofac``.
With ``CI=true`` a missing cluster fails these tests; elsewhere they are skipped
(SLURM is an optional external system).

Every job goes through ``sbatch`` and the executor plugin reads its state from
``sacct``. The shipped ``slurm`` profile is used as is, but for how often it asks
``sacct`` (2 s instead of 20-30 s, so the tests do not idle); the resources come
from the workflow configuration (one CPU, 500 MB, the ``gpu`` partition with one
GPU for motion correction and CTF, run with ``device: cpu`` since the GPUs are
count-only).
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

from tests.workflows.conftest import REPO, run_process, write_movies
from workflows import cli, slurm_jobs

pytestmark = pytest.mark.slow

STEPS = ("motioncorr", "ctf", "pick", "extract", "reconstruct")
ACCOUNT = "cryofac"


def _cluster_problem() -> str | None:
    """Why the SLURM cluster cannot be used, or None when its node takes jobs."""
    for tool in ("sbatch", "sinfo", "sacct", "squeue", "scancel", "scontrol"):
        if shutil.which(tool) is None:
            return f"{tool} not on PATH"
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=30
        )
        sacct = subprocess.run(
            ["sacct", "-n", "-X", "-S", "now"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "sinfo/sacct did not answer in 30 s"
    if states.returncode != 0:
        return f"sinfo failed: {states.stderr.strip()[:200]}"
    if sacct.returncode != 0:
        return f"sacct failed (slurmdbd): {sacct.stderr.strip()[:200]}"
    if not any(s.startswith(("idle", "mixed", "alloc")) for s in states.stdout.split()):
        return f"no SLURM node takes jobs (states: {states.stdout.split()})"
    return None


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    problem = _cluster_problem()
    if problem is not None:
        message = f"SLURM cluster not available: {problem}; run workflows/cluster/slurm-up.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def slurm_profile(tmp_path) -> Path:
    """The shipped slurm profile, asking sacct every 2 s."""
    profile = tmp_path / "profile"
    shutil.copytree(cli.PROFILES / "slurm", profile)
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    settings["slurm-init-seconds-before-status-checks"] = 2
    settings["seconds-between-status-checks"] = 2
    (profile / "config.yaml").write_text(yaml.safe_dump(settings))
    return profile


def cluster_resources(runtime: int = 5, growth: float = 2) -> dict:
    """One CPU and 500 MB per step; GPU partition (one count-only GPU, CPU code) for
    the preprocessing group, CPU partition for the reconstruction."""
    resources = {}
    for step in STEPS:
        gpu = 1 if step in ("motioncorr", "ctf") else 0
        resources[step] = {
            "threads": 1,
            "mem_mb": 500,
            "runtime": runtime,
            "runtime_growth": growth,
            "partition": "cpu" if step == "reconstruct" else "gpu",
            "account": ACCOUNT,
            "gpu": gpu,
            "device": "cpu",
        }
    return resources


def _fake_config(tmp_path: Path, fake_cryofac: Path, **overrides) -> Path:
    config = {
        "cryofac": str(fake_cryofac),
        "batch_size": 4,
        "movies": {"quiet_period_s": 0},
        "downstream": {"min_particles": 10**9, "growth": 1.25},  # no reconstruction
        "resources": cluster_resources(),
    }
    config.update(overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _jobs(out: Path) -> list[dict[str, str]]:
    path = out / slurm_jobs.TABLE
    return list(csv.DictReader(path.open(), delimiter="\t")) if path.exists() else []


def _sacct_states(jobids: list[str]) -> dict[str, str]:
    text = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-j", ",".join(jobids), "-o", "JobID,State"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split("|")[0]: line.split("|")[1].split()[0] for line in text.splitlines()}


def _start(raw: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cryofac.cli", "process", str(raw), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def _finish(child: subprocess.Popen, limit_s: float = 600) -> tuple[int, str]:
    """Wait for a run started by :func:`_start`; on timeout stop it and fail."""
    try:
        _, err = child.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGTERM)
        _, err = child.communicate(timeout=120)
        raise AssertionError(f"run not finished in {limit_s} s: {err[-2000:]}") from None
    return child.returncode, err


def _wait_for(predicate, child: subprocess.Popen | None = None, limit_s: float = 300):
    """Poll ``predicate`` until it returns something truthy (the run must not end first)."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if child is not None and child.poll() is not None:
            _, err = child.communicate()
            raise AssertionError(f"run ended (exit {child.returncode}) first: {err[-2000:]}")
        time.sleep(0.5)
    raise AssertionError(f"not reached in {limit_s} s")


def _queued(out: Path, states: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    jobs = slurm_jobs.active_jobs(out)
    return [j for j in jobs if not states or j[1] in states]


def test_scancelled_job_is_retried_and_run_completes(
    slurm_cluster, slurm_profile, tmp_path, fake_cryofac
):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_movies(raw, [f"m{i:03d}.tiff" for i in range(4)])
    config = _fake_config(tmp_path, fake_cryofac)
    child = _start(raw, "--out", str(out), "--config", str(config), "--profile", str(slurm_profile))
    jobid, _ = _wait_for(lambda: _queued(out), child)[0]
    subprocess.run(["scancel", jobid], check=True)
    code, err = _finish(child)
    assert code == 0, err

    jobs = _jobs(out)
    assert [j["slurm_jobid"] for j in jobs][0] == jobid
    assert [(j["batch"], j["state"]) for j in jobs] == [
        ("b00000", "CANCELLED"),
        ("b00000", "COMPLETED"),
    ]
    assert _sacct_states([j["slurm_jobid"] for j in jobs]) == {
        jobs[0]["slurm_jobid"]: "CANCELLED",
        jobs[1]["slurm_jobid"]: "COMPLETED",
    }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["movies_processed"] == 4 and summary["batches_done"] == 1
    cluster = summary["cluster"]
    assert cluster["jobs"] == {"queued": 0, "running": 0, "done": 1, "failed": 1}
    assert cluster["failures"][0]["state"] == "CANCELLED"
    assert cluster["batches"]["b00000"]["state"] == "COMPLETED"
    assert cluster["batches"]["b00000"]["node"]
    # resources as configured, recorded per job
    done = jobs[1]
    assert (done["partition"], done["account"], done["cpus"], done["gpus"]) == (
        "gpu",
        ACCOUNT,
        "1",
        "1",
    )
    # 4 steps x 5 min, doubled for the retry (runtime_growth 2)
    assert jobs[0]["time_limit"] == "00:20:00" and done["time_limit"] == "00:40:00"
    assert done["mem"] == "500M"


def test_time_limit_reported_with_reason_and_retried_with_more_time(
    slurm_cluster, slurm_profile, tmp_path, fake_cryofac
):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_movies(raw, [f"m{i:03d}.tiff" for i in range(4)])
    resources = cluster_resources()
    resources["reconstruct"]["runtime"] = 1  # minutes; the retry gets 2
    config = _fake_config(
        tmp_path,
        fake_cryofac,
        resources=resources,
        downstream={"min_particles": 10, "growth": 1.25},  # 4 movies: 16 particles
    )
    marker = tmp_path / "hung"
    env = {"FAKE_CRYOFAC_HANG_ONCE": f"reconstruct:{marker}:600"}
    result = run_process(
        str(raw),
        "--out",
        str(out),
        "--config",
        str(config),
        "--profile",
        str(slurm_profile),
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    assert marker.exists()  # the first attempt did hang

    recon = [j for j in _jobs(out) if j["rule"] == "reconstruct"]
    assert [j["state"] for j in recon] == ["TIMEOUT", "COMPLETED"], recon
    assert [j["time_limit"] for j in recon] == ["00:01:00", "00:02:00"]
    summary = json.loads((out / "summary.json").read_text())
    (failure,) = summary["cluster"]["failures"]
    assert failure["state"] == "TIMEOUT" and failure["rule"] == "reconstruct"
    assert failure["slurm_jobid"] == recon[0]["slurm_jobid"]
    assert summary["outputs"]["map"] is not None  # the retry finished the map


def test_drained_node_makes_jobs_wait_not_fail(
    slurm_cluster, slurm_profile, tmp_path, fake_cryofac
):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_movies(raw, [f"m{i:03d}.tiff" for i in range(4)])
    config = _fake_config(tmp_path, fake_cryofac)
    node = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    drain = ["scontrol", "update", f"nodename={node}"]
    subprocess.run([*drain, "state=drain", "reason=cryofac-test"], check=True)
    try:
        child = _start(
            raw, "--out", str(out), "--config", str(config), "--profile", str(slurm_profile)
        )
        jobid, _ = _wait_for(lambda: _queued(out, ("PENDING",)), child)[0]
        # several status checks of the plugin pass while the node is drained
        reason = ""
        for _ in range(10):
            time.sleep(1)
            assert child.poll() is None, child.communicate()
            reason = subprocess.run(
                ["squeue", "-h", "-j", jobid, "-o", "%T %r"], capture_output=True, text=True
            ).stdout.strip()
            assert reason.startswith("PENDING"), reason
        summary = json.loads((out / "summary.json").read_text())
        assert summary["state"] == "running" and summary["cluster"]["jobs"]["queued"] == 1
    finally:
        subprocess.run([*drain, "state=resume"], check=True)
    code, err = _finish(child)
    assert code == 0, err
    assert [j["state"] for j in _jobs(out)] == ["COMPLETED"]  # the same job, not a retry
    assert _jobs(out)[0]["slurm_jobid"] == jobid
    assert json.loads((out / "summary.json").read_text())["movies_processed"] == 4


def test_killed_controller_restarted_waits_for_its_jobs_not_resubmitting(
    slurm_cluster, slurm_profile, tmp_path, fake_cryofac
):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_movies(raw, [f"m{i:03d}.tiff" for i in range(8)])
    config = _fake_config(tmp_path, fake_cryofac)
    calls = tmp_path / "calls.txt"
    env = {"FAKE_CRYOFAC_CALLS": str(calls), "FAKE_CRYOFAC_SLEEP": "3"}
    args = ("--out", str(out), "--config", str(config), "--profile", str(slurm_profile))
    child = _start(raw, *args, "--watch", "--interval", "1", env=env)
    _wait_for(lambda: len(_queued(out)) == 2 and calls.exists(), child)
    # the controller dies at once, cryofac process and its Snakemake, with no cleanup
    snakemake = subprocess.run(
        ["pgrep", "-P", str(child.pid)], capture_output=True, text=True
    ).stdout.split()
    assert snakemake, "no Snakemake child found"
    os.killpg(child.pid, signal.SIGKILL)
    for pid in snakemake:
        os.killpg(int(pid), signal.SIGKILL)  # its own process group
    child.wait(timeout=60)
    orphans = sorted(j for j, _ in slurm_jobs.active_jobs(out))
    assert len(orphans) == 2  # still queued or running in SLURM

    restarted = _start(raw, *args, "--watch", "--interval", "1", env=env)
    _wait_for(
        lambda: json.loads((out / "summary.json").read_text()).get("batches_done") == 2,
        restarted,
    )
    restarted.send_signal(signal.SIGTERM)  # stop (no final pass)
    _, err = _finish(restarted, 120)
    assert "waiting for 2 SLURM job(s) of a previous run" in err, err

    jobs = _jobs(out)
    assert sorted(j["slurm_jobid"] for j in jobs) == orphans  # nothing submitted twice
    assert all(j["state"] == "COMPLETED" for j in jobs), jobs
    motioncorr = [line for line in calls.read_text().splitlines() if line.startswith("motioncorr")]
    assert len(motioncorr) == 2  # each batch's movies corrected once


def test_twelve_movies_on_slurm_equal_the_local_run(slurm_cluster, slurm_profile, tmp_path):
    """Issue 6's 12 simulated movies (real steps) locally and on SLURM: same per-movie
    results and particle counts; every batch a SLURM job that sacct knows."""
    from tests.workflows import test_end_to_end as e2e

    raw = tmp_path / "raw"
    e2e._simulate(raw, 12, 0)
    corrupt = sorted(raw.glob("*.tiff"))[5]
    stat = corrupt.stat()
    corrupt.write_bytes(b"II*\x00" + bytes(1000))
    os.utime(corrupt, (stat.st_atime, stat.st_mtime))
    config = yaml.safe_load(e2e._config(tmp_path).read_text())
    config["downstream"]["min_particles"] = 10**9  # preprocessing only: the bar is the jobs
    config["resources"] = cluster_resources(runtime=10)
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump(config))

    local, remote = tmp_path / "local", tmp_path / "slurm"
    # the corrupt movie fails by design: --allow-failed-movies keeps the exit status 0
    allow = "--allow-failed-movies"
    first = run_process(str(raw), "--out", str(local), "--config", str(path), allow, timeout=900)
    assert first.returncode == 0, first.stderr
    second = run_process(
        str(raw),
        "--out",
        str(remote),
        "--config",
        str(path),
        "--profile",
        str(slurm_profile),
        allow,
        timeout=900,
    )
    assert second.returncode == 0, second.stderr

    def rows(out: Path) -> dict[str, dict]:
        table = csv.DictReader((out / "movies.tsv").open(), delimiter="\t")
        return {r["movie"]: {k: v for k, v in r.items() if k != "processed_at"} for r in table}

    assert rows(remote) == rows(local)
    assert rows(remote)[corrupt.name]["status"] == "failed"
    summaries = [json.loads((o / "summary.json").read_text()) for o in (local, remote)]
    for key in ("movies_seen", "movies_processed", "movies_failed", "particles", "batches_done"):
        assert summaries[0][key] == summaries[1][key], key
    assert summaries[1]["particles"] >= 100 and summaries[1]["batches_done"] == 3
    assert "cluster" not in summaries[0]

    jobs = _jobs(remote)
    assert sorted(j["batch"] for j in jobs) == ["b00000", "b00001", "b00002"]
    assert all(j["rule"] == "motioncorr,ctf,pick,extract" for j in jobs)
    states = _sacct_states([j["slurm_jobid"] for j in jobs])
    assert sorted(states.values()) == ["COMPLETED"] * 3  # each in slurmdbd's accounting
    assert summaries[1]["cluster"]["jobs"]["done"] == 3
