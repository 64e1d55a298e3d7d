"""Pieces of ``cryofac process`` that need no Snakemake run."""

from __future__ import annotations

import json

import pytest

from cryofac.errors import ConfigError
from workflows import cli


def test_acquisition_json_supplies_pixel_size_and_dose(tmp_path):
    (tmp_path / "acquisition.json").write_text(
        json.dumps({"pixel_size_A": 1.06, "dose_per_frame_e_A2": 1.2, "voltage_kV": 300.0})
    )
    assert cli.acquisition_metadata(tmp_path) == {
        "pixel_size_A": 1.06,
        "dose_per_frame_e_A2": 1.2,
        "voltage_kV": 300,
    }
    assert cli.acquisition_metadata(tmp_path / "missing") == {}
    (tmp_path / "acquisition.json").write_text("{not json")
    with pytest.raises(cli.WorkflowFailed, match="acquisition.json: not readable JSON"):
        cli.acquisition_metadata(tmp_path)


def test_config_precedence_and_errors(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text(
        "batch_size: 7\nmovies: {quiet_period_s: 5}\npicking: {particle_diameter_A: 90}\n"
    )
    config = cli.load_config(user, {"batch_size": 3})
    assert config["batch_size"] == 3  # command line beats the file
    assert config["movies"]["quiet_period_s"] == 5
    assert config["movies"]["patterns"]  # defaults kept for keys not given
    assert config["picking"] == {"particle_diameter_A": 90}
    user.write_text("batchsize: 7\n")
    with pytest.raises(ConfigError, match="user.yaml"):
        cli.load_config(user)
    user.write_text("extraction: {box_px: 8}\n")
    with pytest.raises(ConfigError, match="box_px"):
        cli.load_config(user)


def test_failure_message_names_rule_batch_and_log(tmp_path):
    log = tmp_path / "logs" / "b00003" / "ctf.log"
    log.parent.mkdir(parents=True)
    log.write_text("$ cryofac ctf ...\nError: 4 of 4 inputs failed: a.mrc, b.mrc\n")
    output = "\n".join(
        [
            "Error in rule ctf:",
            "    message: None",
            "    jobid: 12",
            "    output: batches/b00003/ctf/status.tsv",
            "    log: logs/b00003/ctf.log (check log file(s) for error details)",
            "Error in rule pick:",
        ]
    )
    message = cli.explain_failure(output, tmp_path)
    assert message.startswith("workflow failed in rule ctf (batch=b00003) and 1 more job(s)")
    assert str(log) in message and "4 of 4 inputs failed" in message
    assert "\n" not in message
    locked = cli.explain_failure("LockException:\nError: Directory cannot be locked.", tmp_path)
    assert "--unlock" in locked


def test_profiles_shipped_and_unknown_profile_is_a_usage_error(tmp_path):
    assert (cli.profile_dir("local") / "config.yaml").is_file()
    assert (cli.profile_dir("slurm") / "config.yaml").is_file()
    import click

    with pytest.raises(click.BadParameter, match="local, slurm"):
        cli.profile_dir(str(tmp_path / "nowhere"))


def test_sigterm_reaches_the_whole_group_and_escalates_to_sigkill(tmp_path):
    """A child group that ignores SIGTERM (as a hung Snakemake would) is killed after the grace."""
    import os
    import signal
    import sys
    import threading
    import time

    stubborn = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    run = cli.Run([sys.executable, "-c", stubborn], tmp_path / "out.log", show_progress=False)
    run.grace_s = 1.0
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    start = time.monotonic()
    code = run(refresh=None, refresh_s=0.5)
    timer.join()
    assert run.terminated_by == signal.SIGTERM
    assert code == -signal.SIGKILL
    assert time.monotonic() - start < 15
    assert "ready" in (tmp_path / "out.log").read_text()


def test_final_pass_waits_for_movies_inside_the_quiet_period(tmp_path):
    """When the acquisition is declared over just after its last movie landed, the final
    pass must not skip that movie (the CI demo once ended with 15 of 16 processed)."""
    import os
    import time

    from workflows.cli import wait_until_quiet

    movies = {"patterns": ["*.tif"], "exclude": ["*gain*"], "quiet_period_s": 1.0}
    old = tmp_path / "old.tif"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 60, time.time() - 60))
    (tmp_path / "fresh.tif").write_bytes(b"x")
    (tmp_path / "gain.tif").write_bytes(b"x")  # excluded: never waited for
    assert wait_until_quiet(tmp_path, movies) == []
    assert time.time() - (tmp_path / "fresh.tif").stat().st_mtime >= 1.0
