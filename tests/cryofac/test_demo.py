"""``cryofac demo``: refuses to clobber folders; the whole story end to end (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cryofac.demo.story import PRESETS, preset


def run_demo(*args: str, cwd: Path, timeout: float = 1800) -> subprocess.CompletedProcess:
    """``cryofac demo`` as a newcomer runs it: the installed command, from a folder that
    is not this checkout (so a wheel install must carry everything the demo needs)."""
    return subprocess.run(
        [sys.executable, "-m", "cryofac.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def test_preset_overrides():
    settings = preset("fast", movies=8, seed=3)
    assert settings.movies == 8 and settings.seed == 3
    assert PRESETS["fast"].movies != 8  # presets themselves are not changed


def test_preset_acquisition_settings_are_simulate_acquisitions_arguments():
    import inspect

    from pipeline.simulate import simulate_acquisition

    settings = preset("fast", seed=3)
    given = settings.acquisition()
    assert given["seed"] == 3 and given["movie_shape"] == settings.movie_shape
    inspect.signature(simulate_acquisition).bind("raw", settings.movies, **given)


def test_preprocessing_jobs_take_one_core_each_so_batches_run_side_by_side(tmp_path: Path):
    """The demo's workflow: motion correction, CTF, picking and extraction one thread a job
    (Snakemake runs a job per core), the reconstruction every core."""
    import os

    import yaml

    from cryofac.demo.story import Demo

    demo = Demo(tmp_path, preset("fast"), host="127.0.0.1", port=0)
    demo.workdir.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(demo._workflow_config().read_text())
    threads = {step: res["threads"] for step, res in config["resources"].items()}
    assert threads == {
        "motioncorr": 1,
        "ctf": 1,
        "pick": 1,
        "extract": 1,
        "reconstruct": os.cpu_count() or 1,
    }


def test_refuses_a_folder_it_did_not_make(tmp_path: Path):
    (tmp_path / "precious.txt").write_text("user data")
    proc = run_demo("--dir", str(tmp_path), "--fast", "--no-serve", cwd=tmp_path, timeout=60)
    assert proc.returncode == 1
    assert "was not made by cryofac demo" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert (tmp_path / "precious.txt").read_text() == "user data"


def test_refuses_an_earlier_demo_without_fresh(tmp_path: Path):
    (tmp_path / ".cryofac-demo").write_text("made by cryofac demo\n")
    (tmp_path / "cryofac.sqlite3").write_text("")
    proc = run_demo("--dir", str(tmp_path), "--fast", "--no-serve", cwd=tmp_path, timeout=60)
    assert proc.returncode == 1 and "--fresh" in proc.stderr


@pytest.mark.slow
def test_fast_demo_end_to_end(tmp_path: Path):
    workdir = tmp_path / "demo"
    proc = run_demo("--dir", str(workdir), "--fast", "--no-serve", "--port", "0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((workdir / "demo-result.json").read_text())
    # the rules and the gate did their jobs
    assert result["refused_booking_status"] == 422
    assert result["gate_refused_during_fault"] is True
    assert result["gate_allowed_now"] is True
    assert result["env_readings_posted"] > 0
    # every movie processed, a map downloaded over HTTP, close to the simulated truth
    summary = result["summary"]
    assert summary["movies_processed"] == PRESETS["fast"].movies
    assert summary["movies_failed"] == 0
    assert result["run_page_bytes"] > 0  # the run page (cookie log-in) offers map.mrc
    assert result["map_downloaded_bytes"] > 0
    assert (workdir / "downloads" / "map.mrc").exists()
    # FSC 0.5 against the simulated truth (aligned, hand checked); the workflow's own
    # half-map estimate is reported but not trusted here (see BENCHMARKS.md). Read where
    # the curve falls for good (apoferritin's minimum near 16 Å can dip just under 0.5 on
    # a right map); wrong maps fall for good at 21-23 Å, and fall first no later than that
    assert result["resolution_vs_truth_A"] <= EXPECTED_RESOLUTION_A
    assert result["resolution_vs_truth_first_A"] <= WRONG_MAP_A
    assert summary["resolution_A"] is not None
    # whatever the reconstruction warned about reaches the researcher through the portal
    assert result["map_warnings"] == summary["warnings"]
    provenance = json.loads(next((workdir / "raw").glob("session-*/environment.json")).read_text())
    assert provenance
    # the microscope landed every movie it simulated ahead, and left no staging behind
    assert result["acquisition"]["movies_landed"] == PRESETS["fast"].movies
    assert result["acquisition"]["nominal_per_h"] == 3600 / PRESETS["fast"].interval_s
    assert not (workdir / "microscope").exists()


#: The fast preset (16 movies, 567 particles of apoferritin at 3 Å/pixel, symmetry O):
#: 7.2 Å against the truth with ab-initio's sampled posterior (9.6 Å with its ten best
#: poses, each gold-standard half given its own ab-initio map; issue 22; 7.1-8.1 Å with
#: one ab-initio map shared by both halves, whose half-map FSC could not be trusted; the
#: same particles at their true poses reach about 6.5 Å; the wrong maps earlier versions
#: found were 21-23 Å); see BENCHMARKS.md.
EXPECTED_RESOLUTION_A = 10.0
#: the first fall below 0.5 of a right map: at most the hollow shell's minimum (16-17 Å;
#: on an Intel Xeon a right map's curve dipped to 0.49 there, 9 Å for good: BENCHMARKS.md,
#: 2026-12-07 third session), short of the wrong maps' 21-23 Å
WRONG_MAP_A = 20.0


def _processes_mentioning(text: str) -> dict[int, str]:
    """pid → command line of every live process whose command line contains ``text``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            raw = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        command = raw.replace(b"\0", b" ").decode(errors="replace")
        if text in command and state != "Z":
            found[int(proc.name)] = command
    return found


def _demo_with_children(workdir: Path, args: tuple[str, ...], running: tuple[str, ...]):
    """``cryofac demo --dir WORKDIR ARGS --no-serve --port 0`` started and waited for
    until every text of ``running`` is in the command line of one of its processes."""
    import signal
    import time

    def ctrl_c_as_at_a_terminal() -> None:
        # a test run started in the background of a script (``cmd &``) inherits SIGINT
        # ignored, and Python then never turns Ctrl-C into KeyboardInterrupt: give the
        # demo the disposition it has at a terminal, so that the test measures the demo
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    demo = subprocess.Popen(
        [sys.executable, "-m", "cryofac.cli", "demo", "--dir", str(workdir), *args]
        + ["--no-serve", "--port", "0"],
        cwd=workdir.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=ctrl_c_as_at_a_terminal,
    )
    deadline = time.monotonic() + 600
    commands = ""
    while time.monotonic() < deadline:
        commands = " ".join(_processes_mentioning(str(workdir)).values())
        if all(text in commands for text in running):
            return demo
        if demo.poll() is not None:
            break
        time.sleep(0.5)
    demo.kill()
    demo.wait()
    pytest.fail(f"the demo's children never all ran: {running}: {commands}")


def _left_after(workdir: Path, seconds: float) -> dict[int, str]:
    """The processes still naming ``workdir`` after up to ``seconds`` (then killed, so the
    machine stays clean even when the test fails)."""
    import os
    import signal
    import time

    deadline = time.monotonic() + seconds
    while _processes_mentioning(str(workdir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _processes_mentioning(str(workdir))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


@pytest.mark.slow
def test_a_killed_demo_leaves_no_process_behind(tmp_path: Path):
    """kill -9 of ``cryofac demo`` once its notification worker and environment monitor
    run: both (and the workflow, if started) die with it within seconds."""
    workdir = tmp_path / "demo"
    demo = _demo_with_children(workdir, ("--fast",), (" portal worker ", " monitor "))
    demo.kill()
    demo.wait()
    left = _left_after(workdir, 30)
    assert not left, left


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset_args", "signame", "running"),
    [
        # the default demo while it simulates its movies ahead (services up)
        ((), "SIGINT", (" portal worker ", " monitor ", "cryofac.demo.microscope")),
        # the fast demo once `cryofac process --watch` and its Snakemake run
        (("--fast",), "SIGTERM", (" portal worker ", "cryofac.cli process", "snakemake")),
    ],
)
def test_ctrl_c_or_sigterm_stops_the_demo_and_every_child_within_seconds(
    tmp_path: Path, preset_args, signame, running
):
    import signal

    workdir = tmp_path / "demo"
    demo = _demo_with_children(workdir, preset_args, running)
    try:
        demo.send_signal(getattr(signal, signame))
        code = demo.wait(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    left = _left_after(workdir, 15)
    assert code == 130  # "Interrupted."
    assert not left, left
