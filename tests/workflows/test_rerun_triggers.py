"""Issue 18: an update of the workflow's code does not redo finished batches.

Snakemake's default rerun triggers include ``code``: a script newer than a job's
outputs (any ``git pull`` or reinstall) reruns every batch of every run folder.
`cryofac process` uses ``--rerun-triggers mtime params input``: reruns follow the
inputs, the parameters and each step's own version (``STEP_VERSIONS`` in
rules/common.smk). On a copy of the workflow (so the repository is left alone).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.workflows.conftest import REPO, write_movies
from workflows import cli


def _snakemake(snakefile: Path, raw: Path, out: Path, configs: list[Path], *extra: str):
    command = cli.snakemake_command(raw, out, configs, cli.PROFILES / "local", 2, dry_run=False)
    command[command.index("--snakefile") + 1] = str(snakefile)
    return subprocess.run(
        [*command, *extra],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _planned(result) -> set[str]:
    """Rules a dry run would run (Snakemake's job-stats table)."""
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return set()
    return set(re.findall(r"^(\w+)\s+\d+\s*$", text, flags=re.MULTILINE)) - {"total"}


@pytest.mark.slow
def test_changed_scripts_redo_nothing_a_step_version_redoes_that_step(tmp_path, small_config):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_movies(raw, [f"movie_{i:03d}.mrc" for i in range(1, 5)])
    copy = tmp_path / "workflow"
    shutil.copytree(REPO / "workflows", copy, ignore=shutil.ignore_patterns("__pycache__"))
    snakefile = copy / "Snakefile"
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(yaml.safe_dump({"movies": {"quiet_period_s": 0}}))
    configs = [small_config, overrides]
    first = _snakemake(snakefile, raw, out, configs)
    assert first.returncode == 0, first.stderr
    assert (out / "batches/b00000/movies.tsv").exists()

    # every script and rule file changed (as after an update of cryofac)
    later = time.time() + 60
    for path in [*copy.glob("scripts/*.py"), *copy.glob("rules/*.smk"), snakefile]:
        if path.suffix == ".py":
            path.write_text(path.read_text() + "\n# changed\n")
        os.utime(path, (later, later))
    assert _planned(_snakemake(snakefile, raw, out, configs, "-n")) == set()
    # Snakemake's default triggers would redo the whole batch: the option matters
    default = _planned(
        _snakemake(
            snakefile,
            raw,
            out,
            configs,
            "-n",
            "--rerun-triggers",
            "code",
            "input",
            "mtime",
            "params",
            "software-env",
        )
    )
    assert {"motioncorr", "ctf", "pick", "extract"} <= default, default

    # a new version of one step redoes it and what uses its outputs, nothing before it
    common = copy / "rules" / "common.smk"
    common.write_text(common.read_text().replace('"pick": 1,', '"pick": 2,'))
    planned = _planned(_snakemake(snakefile, raw, out, configs, "-n"))
    assert "pick" in planned and "extract" in planned, planned
    assert not planned & {"motioncorr", "ctf", "batch_manifest"}, planned


@pytest.mark.slow
def test_a_changed_symmetry_reruns_the_finished_reconstruction(tmp_path, small_config):
    """Issue 18 case 2: C1 then O on a finished run gives an O reconstruction (the
    controller used to skip a reconstruction whose result.json existed)."""
    import json

    from tests.workflows.conftest import run_process

    raw, out = tmp_path / "raw", tmp_path / "out"
    write_movies(raw, [f"movie_{i:03d}.mrc" for i in range(1, 9)])
    args = (str(raw), "--out", str(out), "--cores", "2")
    first = run_process(*args, "--config", str(small_config))
    assert first.returncode == 0, first.stderr
    (result,) = out.glob("reconstruct/p*/result.json")
    assert json.loads(result.read_text())["symmetry"] == "C1"

    calls = tmp_path / "calls.txt"
    env = {"FAKE_CRYOFAC_CALLS": str(calls)}
    again = run_process(*args, "--config", str(small_config), env=env)
    assert again.returncode == 0, again.stderr
    assert not calls.exists() or "reconstruct" not in calls.read_text()  # nothing changed

    data = yaml.safe_load(small_config.read_text())
    data["reconstruct"] = {"symmetry": "O"}
    changed = tmp_path / "octahedral.yaml"
    changed.write_text(yaml.safe_dump(data))
    second = run_process(*args, "--config", str(changed), env=env)
    assert second.returncode == 0, second.stderr
    assert "reconstruct" in calls.read_text().split()
    assert json.loads(result.read_text())["symmetry"] == "O"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outputs"]["half1"] == str(result.parent.relative_to(out) / "half1.mrc")

    third = run_process(*args, "--config", str(changed), env=env)  # and only once
    assert third.returncode == 0, third.stderr
    assert calls.read_text().split().count("reconstruct") == 1
