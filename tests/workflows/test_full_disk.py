"""Issue 18: a disk that really fills up (ENOSPC from the kernel, not injected) while
the real steps write, then space freed: the movies are processed, none is failed.

The run folder is a small tmpfs (root may mount one; CI runs as root on this kind of
machine), filled with a file until a micrograph no longer fits; the file is removed
once the step says it waits (``waiting.json``).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.workflows.conftest import REPO, run_process

pytestmark = pytest.mark.slow


def _simulate(raw: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cryofac.cli", "simulate", "acquisition", str(raw)]
        + ["--movies", "4", "--size", "256", "--frames", "6", "--pixel-size", "2.0"]
        + ["--dose-per-frame", "5", "--seed", "5", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    past = time.time() - 600
    for path in raw.iterdir():
        os.utime(path, (past, past))


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"cannot mount a tmpfs: {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_really_full_disk_is_waited_out_then_the_movies_are_processed(tmp_path, small_disk):
    raw, out = tmp_path / "raw", small_disk / "run"
    _simulate(raw)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "batch_size": 4,
                "movies": {"quiet_period_s": 0},
                "downstream": {"min_particles": 10**9},  # preprocessing only
                "motioncorr": {"patches": [1, 1]},
                "extraction": {"box_px": 64},
                "resources": {s: {"threads": 1} for s in ("motioncorr", "ctf", "pick", "extract")},
                "retry": {"wait_s": 0.5, "limit_s": 300},
            }
        )
    )
    # fill the disk but ~160 KiB: the run's bookkeeping fits, a 256 KiB micrograph not
    filler = small_disk / "filler"
    free = os.statvfs(small_disk)
    with open(filler, "wb") as handle:
        handle.write(b"\0" * (free.f_bavail * free.f_frsize - 160 * 1024))
    waiting = out / "batches/b00000/motioncorr/waiting.json"
    seen: dict = {}

    def free_space() -> None:
        deadline = time.time() + 240
        while time.time() < deadline:
            try:
                seen.update(json.loads(waiting.read_text()))
                break
            except (OSError, ValueError):
                time.sleep(0.1)
        filler.unlink()

    freer = threading.Thread(target=free_space)
    freer.start()
    result = run_process(str(raw), "--out", str(out), "--config", str(config), "--cores", "2")
    freer.join()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No space left on device" in seen.get("reason", ""), seen  # the kernel's ENOSPC
    assert seen["gave_up"] is False and seen["step"] == "motioncorr"
    log = (out / "logs/b00000/motioncorr.log").read_text()
    assert "waiting 0.5 s (transient error, attempt 1)" in log and "[Errno 28]" in log
    with (out / "movies.tsv").open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}, rows
    assert not waiting.exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["movies_failed"] == 0 and summary["movies_processed"] == 4
