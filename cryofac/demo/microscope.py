"""The demo's microscope: movies simulated ahead, landing on a fixed schedule.

Simulating a movie costs more CPU than processing it, and the simulator shares the
cores with the processing it feeds: movies written as they are simulated land at
whatever pace the load allows (issue 18 measured 180 movies/h for a nominal 360/h on
2 cores). So the demo's microscope simulates every movie first, in worker processes
(one per core, at most two) started with the demo, into a staging folder
beside the raw-data folder; then movie ``k`` lands in the raw-data folder at
``t0 + k * interval_s`` by an atomic rename, its modification time set to the landing
time. The landing schedule, not the simulator's speed, is the acquisition rate.

Movies are named ``movie_00001.tiff`` ... (``naming="plain"``): the simulator's EPU
names carry a fixed acquisition time 35 s apart, which the workflow would read as the
acquisition's own clock (see :func:`workflows.summary.acquisition_times`); plain names
make it take the landing times, which are the demo's acquisition.

Run a worker by hand: ``python -m cryofac.demo.microscope STAGING WORKER WORKERS JSON``
(``JSON``: :meth:`cryofac.demo.story.Settings.acquisition` plus ``movies``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: nice increment of the simulator workers: none, since they run before the processing
#: starts (the demo waits for every movie), beside the demo's own set-up only
NICENESS = 0


@dataclass
class Landing:
    """What :meth:`Microscope.release` did: landing times (s since the epoch, in order)
    and how late each movie landed against its schedule (s; > 0 when the simulator had
    not finished it in time, which the demo avoids by simulating everything first)."""

    landed: list[float] = field(default_factory=list)
    late_s: list[float] = field(default_factory=list)

    def rate_per_h(self) -> float | None:
        """Movies per hour from the first landing to the last."""
        if len(self.landed) < 2 or self.landed[-1] <= self.landed[0]:
            return None
        return (len(self.landed) - 1) * 3600.0 / (self.landed[-1] - self.landed[0])


class Microscope:
    """Simulates ``n_movies`` into ``staging`` (:meth:`start`), then lands them in a
    raw-data folder on a schedule (:meth:`release`)."""

    def __init__(self, staging: Path, n_movies: int, acquisition: dict[str, Any], log: Path):
        self.staging = Path(staging)
        self.n_movies = int(n_movies)
        self.acquisition = dict(acquisition)
        self.log_path = Path(log)
        self.workers: list[subprocess.Popen] = []

    def _folder(self, worker: int) -> Path:
        return self.staging / f"w{worker}"

    def start(self, workers: int | None = None) -> None:
        """Start the simulator workers (worker ``w`` simulates movies ``w, w+W, ...``)."""
        from workflows.control import die_with_parent

        count = workers or max(1, min(2, os.cpu_count() or 1))
        if self.staging.exists():
            shutil.rmtree(self.staging)
        settings = json.dumps({**self.acquisition, "movies": self.n_movies})

        parent = os.getpid()

        def prepare() -> None:
            die_with_parent(parent)
            if NICENESS:
                os.nice(NICENESS)

        with open(self.log_path, "a") as log:
            for w in range(count):
                self._folder(w).mkdir(parents=True)
                command = [sys.executable, "-m", "cryofac.demo.microscope"]
                command += [str(self._folder(w)), str(w), str(count), settings]
                self.workers.append(
                    subprocess.Popen(
                        command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=prepare
                    )
                )

    def _ready(self, k: int) -> Path | None:
        """The staging folder of movie ``k`` once it is wholly written, else None."""
        folder = self._folder(k % len(self.workers))
        return folder if (folder / "ready" / str(k)).exists() else None

    def staged(self) -> int:
        return sum(self._ready(k) is not None for k in range(self.n_movies))

    def failure(self) -> str | None:
        """A one-line reason when a worker ended without simulating all its movies."""
        for w, process in enumerate(self.workers):
            code = process.poll()
            if code is not None and code != 0:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:]
                return f"simulator worker {w} exited {code}: {tail[0] if tail else ''}"
        return None

    def wait_staged(self, on_progress=None, poll_s: float = 1.0) -> None:
        """Block until every movie is simulated (raises RuntimeError if a worker fails)."""
        while True:
            done = self.staged()
            if on_progress is not None:
                on_progress(done)
            if done >= self.n_movies:
                return
            reason = self.failure()
            if reason:
                raise RuntimeError(reason)
            time.sleep(poll_s)

    def release(
        self,
        raw_dir: Path,
        interval_s: float,
        stop: threading.Event | None = None,
        landing: Landing | None = None,
    ) -> Landing:
        """Land every movie in ``raw_dir``, movie ``k`` at ``t0 + k * interval_s``.

        The acquisition's metadata (``gain.mrc``, ``acquisition.json``, the truth map)
        land first; then, per movie, its truth files and XML, then the movie itself by
        an atomic rename (the workflow never sees a partial movie). Stops early when
        ``stop`` is set. Returns (and fills ``landing``) the landing record.
        """
        from pipeline.simulate.acquisition import write_ctf_summary

        landing = landing if landing is not None else Landing()
        raw_dir = Path(raw_dir)
        (raw_dir / "truth").mkdir(parents=True, exist_ok=True)
        first = self._folder(0)
        for name in ("gain.mrc", "acquisition.json", "truth/truth_map.mrc"):
            if (first / name).exists():
                os.replace(first / name, raw_dir / name)
        t0 = time.monotonic()
        for k in range(self.n_movies):
            due = t0 + k * interval_s
            while True:
                if stop is not None and stop.is_set():
                    return landing
                folder = self._ready(k)
                wait = due - time.monotonic()
                if folder is not None and wait <= 0:
                    break
                reason = self.failure() if folder is None else None
                if reason:
                    raise RuntimeError(reason)
                time.sleep(min(0.2, max(wait, 0.05)))
            landing.late_s.append(round(max(0.0, time.monotonic() - due), 2))
            self._land(folder, (folder / "ready" / str(k)).read_text().strip(), raw_dir)
            landing.landed.append(time.time())
        write_ctf_summary(raw_dir)
        shutil.rmtree(self.staging, ignore_errors=True)  # what is left: copies of the gain
        return landing

    @staticmethod
    def _land(folder: Path, movie: str, raw_dir: Path) -> None:
        stem = movie.rsplit(".", 1)[0]
        for path in sorted((folder / "truth").glob(f"{stem}*")):
            os.replace(path, raw_dir / "truth" / path.name)
        xml = folder / f"{stem.removesuffix('_fractions')}.xml"
        if xml.exists():
            os.replace(xml, raw_dir / xml.name)
        now = time.time()
        os.utime(folder / movie, (now, now))  # landed now, whenever it was simulated
        os.replace(folder / movie, raw_dir / movie)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the simulator workers (SIGTERM, SIGKILL after ``grace_s``)."""
        for process in self.workers:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in self.workers:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def simulate_worker(folder: Path, worker: int, workers: int, settings: dict[str, Any]) -> None:
    """Simulate movies ``worker, worker + workers, ...`` into ``folder``; after each,
    ``folder/ready/<k>`` names the finished movie."""
    from pipeline.simulate import simulate_acquisition

    settings = dict(settings)
    n_movies = int(settings.pop("movies"))
    settings["interval_s"] = 0.0  # the schedule is the release's, not the simulator's
    ready = folder / "ready"
    ready.mkdir(parents=True, exist_ok=True)
    for k in range(worker, n_movies, workers):
        (path,) = simulate_acquisition(
            folder, 1, start_index=k, naming="plain", progress=False, **settings
        )
        (ready / f".{k}.tmp").write_text(path.name + "\n")
        os.replace(ready / f".{k}.tmp", ready / str(k))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        folder, worker, workers, settings = sys.argv[1:5]
        simulate_worker(Path(folder), int(worker), int(workers), json.loads(settings))
    except KeyboardInterrupt:
        sys.exit(130)
