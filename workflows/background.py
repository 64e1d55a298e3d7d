"""The reconstruction as a job beside preprocessing, never in front of it.

``cryofac process`` runs preprocessing passes (motion correction → extraction →
gathering) in one Snakemake and the reconstruction due at the gathered particle
count in a second one, started in its own process group at a lower CPU priority
(``nice``), limited to the rules ``particle_snapshot`` and ``reconstruct`` so it
never touches a batch. The next preprocessing pass starts at once: new movies never
wait for a reconstruction. Both Snakemakes hold the run folder's locks and die with
the controller.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from workflows import batching, control

#: nice increment of the reconstruction (preprocessing keeps the CPU when it needs it)
NICENESS = 10


#: per reconstruction folder: what the finished reconstruction was asked for
REQUEST_FILE = "request.json"


def request(config: dict) -> dict:
    """What a reconstruction is asked for: the pipeline's ``reconstruct`` section (after
    the run's overrides) and the extra command-line options of the step. A change of
    it makes a finished reconstruction due again; Snakemake then reruns the ``reconstruct``
    rule if its parameters changed (``--rerun-triggers params``), else does nothing."""
    from cryofac.config import load_pipeline

    sections = {k: config[k] for k in ("reconstruct",) if k in config}
    return {
        "reconstruct": load_pipeline(overrides=sections)["reconstruct"],
        "extra": (config.get("extra") or {}).get("reconstruct", ""),
    }


def record_request(out: Path, target: str, asked: dict) -> None:
    """After a reconstruction Snakemake ended well: what ``target`` was made for."""
    folder = out / Path(target).parent
    if (folder / "result.json").exists():
        tmp = folder / f".{REQUEST_FILE}.tmp"
        tmp.write_text(json.dumps(asked, sort_keys=True, default=str) + "\n")
        os.replace(tmp, folder / REQUEST_FILE)


def due_target(out: Path, config: dict, final: bool) -> str | None:
    """``reconstruct/p<N>/result.json`` due at the gathered count, unless it exists and
    was made for the same :func:`request` (a folder without a record, made before
    records existed, counts as made for it)."""
    try:
        count = int(json.loads((out / "particles" / "count.json").read_text())["particles"])
    except (OSError, ValueError, KeyError):
        return None
    downstream = config["downstream"]
    n = batching.reconstruction_target(
        downstream["min_particles"], downstream["growth"], count, final=final
    )
    if n is None:
        return None
    target = f"reconstruct/p{n:07d}/result.json"
    if not (out / target).exists():
        return target
    try:
        made_for = json.loads((out / Path(target).parent / REQUEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    asked = json.loads(json.dumps(request(config), sort_keys=True, default=str))
    return target if made_for != asked else None


class Reconstruction:
    """At most one reconstruction Snakemake at a time, started with :meth:`start`."""

    def __init__(self, log_path: Path, run_lock: control.RunLock | None):
        self.log_path = log_path
        self.run_lock = run_lock
        self.process: subprocess.Popen | None = None
        self.target: str | None = None
        self.request: dict = {}

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(
        self, command: list[str], target: str, nice: bool = True, request: dict | None = None
    ) -> None:
        """Start ``command`` (a Snakemake command line ending with ``target``); ``nice``:
        at a lower CPU priority (beside preprocessing; not for the final, awaited one);
        ``request``: what it is asked for (:func:`request`), recorded when it ends well."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.run_lock is not None:
            env[control.JOBS_LOCK_ENV] = self.run_lock.jobs_path

        parent = os.getpid()

        def prepare() -> None:
            control.die_with_parent(parent)
            if nice:
                os.nice(NICENESS)

        with open(self.log_path, "a") as log:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=self.run_lock.fds if self.run_lock is not None else (),
                preexec_fn=prepare,
                env=env,
            )
        self.target = target
        self.request = request or {}

    def finished(self) -> int | None:
        """Exit code of the last reconstruction once it ended (then forgotten), else None."""
        if self.process is None or self.process.poll() is None:
            return None
        code = self.process.returncode
        self.process = None
        return code

    def wait(self) -> int | None:
        """Wait for the running reconstruction; its exit code (None when none ran)."""
        if self.process is None:
            return None
        self.process.wait()
        return self.finished()

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to its process group, SIGKILL after ``grace_s`` seconds."""
        if not self.running():
            return
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
