"""Fixtures for the workflow tests: raw folders and a fast stand-in ``cryofac``."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

FAKE = Path(__file__).with_name("fake_cryofac.py")
REPO = Path(__file__).resolve().parents[2]


def write_movies(raw: Path, names: list[str], corrupt: tuple[str, ...] = ()) -> None:
    """Small placeholder movies (old mtimes: past the quiet period)."""
    raw.mkdir(parents=True, exist_ok=True)
    past = time.time() - 3600
    for name in names:
        path = raw / name
        path.write_bytes(b"CORRUPT" if name in corrupt else f"MOVIE {name}".encode())
        os.utime(path, (past, past))


@pytest.fixture
def fake_cryofac(tmp_path) -> Path:
    """An executable ``cryofac`` that runs tests/workflows/fake_cryofac.py."""
    exe = tmp_path / "bin" / "cryofac"
    exe.parent.mkdir()
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


@pytest.fixture
def small_config(tmp_path, fake_cryofac) -> Path:
    """Batches of 4, reconstruction from 20 particles, one thread per step."""
    path = tmp_path / "config.yaml"
    config = {
        "cryofac": str(fake_cryofac),
        "batch_size": 4,
        "movies": {"quiet_period_s": 0},
        "downstream": {"min_particles": 20, "growth": 1.25},
        "resources": {step: {"threads": 1} for step in ("motioncorr", "ctf", "reconstruct")},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start_watch(raw: Path, out: Path, config: Path, interval: float, stdout, env=None):
    """``cryofac process --watch`` on ``raw`` in the background (as a user starts it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cryofac.cli", "process", str(raw), "--out", str(out)]
        + ["--config", str(config), "--cores", "2", "--watch", "--interval", str(interval)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def run_process(*args: str, env: dict | None = None, timeout: float = 300):
    """``cryofac process ARGS`` in a child process (as a user runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "cryofac.cli", "process", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )
