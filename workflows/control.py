"""One controller per run folder, and children that die with it.

Two ``flock`` locks in ``OUT/.cryofac/``:

- ``lock``: exclusive, held by the controller (``cryofac process``) and inherited by
  its Snakemake, so a second controller is refused while either lives;
- ``jobs.lock``: shared, held by the controller, its Snakemake and every job
  (``run_step.py`` takes it again from ``CRYOFAC_JOBS_LOCK``). A new controller takes
  it exclusively first: that succeeds only when no process of an earlier run is
  alive, which proves Snakemake's own lock stale before it is removed.

Children are started with ``PR_SET_PDEATHSIG`` (Linux): when the controller dies,
even by SIGKILL, its Snakemake gets SIGTERM, and each job's step does too.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryofac.errors import CryofacError

PR_SET_PDEATHSIG = 1
JOBS_LOCK_ENV = "CRYOFAC_JOBS_LOCK"


class RunFolderBusy(CryofacError):
    """Another controller, or processes of a killed one, still work in the run folder."""


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def die_with_parent(parent_pid: int | None = None) -> None:
    """``preexec_fn`` for children: SIGTERM when the parent dies.

    ``parent_pid``: the parent's ``os.getpid()``, taken before the fork. The request holds
    only for a parent alive when it is made (prctl(2)): a parent killed between the fork
    and the request would leave the child running for good. With ``parent_pid`` the child
    sees that its parent is no longer that process and exits at once (status 143)."""
    set_parent_death_signal(signal.SIGTERM)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(128 + signal.SIGTERM)


def die_with_this_process() -> Callable[[], None]:
    """A ``preexec_fn``, made in the parent, for children that must die with it
    (:func:`die_with_parent` with this process's pid)."""
    return functools.partial(die_with_parent, os.getpid())


@dataclass
class RunLock:
    """The controller's two open lock files (kept open for the controller's life)."""

    lock: IO[str]
    jobs: IO[str]

    @property
    def fds(self) -> tuple[int, int]:
        """File descriptors to pass to Snakemake (``pass_fds``)."""
        return (self.lock.fileno(), self.jobs.fileno())

    @property
    def jobs_path(self) -> str:
        return self.jobs.name

    def close(self) -> None:
        self.jobs.close()
        self.lock.close()


def acquire(state_dir: Path, wait_s: float = 20.0) -> RunLock:
    """Take the run folder: refuse if a controller holds it; wait ``wait_s`` seconds for
    processes of a killed run (they got SIGTERM when it died) before refusing."""
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = open(state_dir / "lock", "a")  # noqa: SIM115 - held for the controller's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise RunFolderBusy(
            f"{state_dir.parent}: another 'cryofac process' is running on this folder"
        ) from None
    jobs = open(state_dir / "jobs.lock", "a")  # noqa: SIM115 - held for the controller's life
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(jobs, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                jobs.close()
                lock.close()
                raise RunFolderBusy(
                    f"{state_dir.parent}: Snakemake or jobs of an earlier, killed run are "
                    f"still running here (they hold {state_dir / 'jobs.lock'}); stop them first"
                ) from None
            time.sleep(0.2)
    # nobody from an earlier run is alive: from now on we, our Snakemake and its
    # jobs hold it shared
    fcntl.flock(jobs, fcntl.LOCK_SH)
    return RunLock(lock=lock, jobs=jobs)


def hold_jobs_lock() -> IO[str] | None:
    """In a job: take the run's jobs lock shared (``CRYOFAC_JOBS_LOCK``); None if unset."""
    path = os.environ.get(JOBS_LOCK_ENV)
    if not path:
        return None
    try:
        handle = open(path, "a")  # noqa: SIM115 - held for the job's life
        fcntl.flock(handle, fcntl.LOCK_SH)
    except OSError:
        return None
    return handle
