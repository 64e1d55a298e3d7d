"""Progress of a reconstruction: the stage, its fraction done and an ETA, for a
terminal (tqdm), a log (plain lines) and the run page (``progress.json`` in the output
folder, rewritten atomically at most once a second and at every stage change).

Stages report through :class:`StageProgress` (``progress(message, fraction)``); a plain
``callable(message)`` works too (:func:`report`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from cryofac.fileio import atomic_write

#: share of the whole run's time each stage takes (the bar's fraction; the ETA's guess for
#: stages not yet measured). Shares vary with the run: the 100,000-particle run of box 128
#: spent 72 % of its time in refinement, 18 % in 2D classification and 8 % in ab-initio
#: (the weights were 0.55, 0.12 and 0.25 before it), so the ETA measures the pace of the stages run so far (:meth:`Progress.eta_s`)
STAGE_WEIGHTS = {
    "load": 0.02,
    "class2d": 0.15,
    "abinitio": 0.15,
    "refine": 0.66,
    "postprocess": 0.02,
}


def _write_json_atomic(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data))


class Progress:
    """Whole-run progress. ``sink(line)`` receives log lines (None: no lines); ``bar`` a
    tqdm bar with total 100 (percent of the run) or None; ``out_dir`` gets
    ``progress.json``."""

    def __init__(
        self,
        out_dir: str | os.PathLike | None = None,
        sink: Callable[[str], None] | None = None,
        bar=None,
        min_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.clock = clock
        self.path = Path(out_dir) / "progress.json" if out_dir is not None else None
        self.sink = sink
        self.bar = bar
        self.min_interval_s = min_interval_s
        self.t0 = clock()
        self._stage_t0 = self.t0
        #: (weight, seconds) of every weighted stage finished so far
        self._finished: list[tuple[float, float]] = []
        self.stage_name = "start"
        self.stage_fraction = 0.0
        self.message = ""
        self._last_write = -1e9
        self._last_line_fraction = -1.0

    def fraction(self) -> float:
        done = 0.0
        for name, weight in STAGE_WEIGHTS.items():
            if name == self.stage_name:
                return min(1.0, done + weight * self.stage_fraction)
            done += weight
        return 1.0 if self.stage_name == "done" else 0.0  # "start": nothing done yet

    def eta_s(self) -> float | None:
        """Seconds left (None: too early to say). The current stage's remainder comes from
        its own pace once it is 5 % done; stages still to come from their weights at the
        pace (seconds per unit of weight) of the stages run so far, the current one
        projected to its end. Before any stage is measured: the whole run's pace over the
        weights (which alone misjudged the 100,000-particle run by 2×)."""
        now = self.clock()
        frac = self.fraction()
        if self.stage_name == "done":
            return 0.0
        weight = STAGE_WEIGHTS.get(self.stage_name)
        names = list(STAGE_WEIGHTS)
        if weight is None:
            return None if frac <= 0.01 else (now - self.t0) * (1.0 - frac) / frac
        later = sum(STAGE_WEIGHTS[n] for n in names[names.index(self.stage_name) + 1 :])
        spent = now - self._stage_t0
        done_w = sum(w for w, _ in self._finished)
        done_s = sum(t for _, t in self._finished)
        f = self.stage_fraction
        if f >= 0.05:
            current_left = spent * (1.0 - f) / f
            pace = (done_s + spent / f) / (done_w + weight)
        elif done_w > 0:
            pace = done_s / done_w
            current_left = max(0.0, weight * pace - spent)
        else:
            return None if frac <= 0.01 else (now - self.t0) * (1.0 - frac) / frac
        return current_left + later * pace

    def stage(self, name: str) -> StageProgress:
        now = self.clock()
        if self.stage_name in STAGE_WEIGHTS:
            self._finished.append((STAGE_WEIGHTS[self.stage_name], now - self._stage_t0))
        self._stage_t0 = now
        self.stage_name, self.stage_fraction, self.message = name, 0.0, ""
        self._emit(force=True)
        return StageProgress(self, name)

    def update(self, message: str | None, fraction: float | None) -> None:
        if fraction is not None:
            self.stage_fraction = max(0.0, min(1.0, float(fraction)))
        if message:
            self.message = message
        self._emit(force=bool(message))

    def finish(self) -> None:
        self.stage_name, self.stage_fraction, self.message = "done", 1.0, "finished"
        self._emit(force=True)

    def _emit(self, force: bool) -> None:
        now = self.clock()
        frac = self.fraction()
        eta = self.eta_s()
        if self.bar is not None:
            self.bar.n = round(100 * frac, 1)
            self.bar.set_postfix_str(f"{self.stage_name}: {self.message}"[:80], refresh=False)
            self.bar.refresh()
        if self.sink is not None and (force or frac - self._last_line_fraction >= 0.02):
            eta_text = f", ETA {eta / 60:.1f} min" if eta is not None else ""
            self.sink(
                f"reconstruct {100 * frac:5.1f}% [{self.stage_name} "
                f"{100 * self.stage_fraction:.0f}%] {self.message} "
                f"({(now - self.t0) / 60:.1f} min{eta_text})"
            )
            self._last_line_fraction = frac
        if self.path is not None and (force or now - self._last_write >= self.min_interval_s):
            _write_json_atomic(
                self.path,
                {
                    "stage": self.stage_name,
                    "stage_fraction": round(self.stage_fraction, 4),
                    "fraction": round(frac, 4),
                    "message": self.message,
                    "elapsed_s": round(now - self.t0, 1),
                    "eta_s": None if eta is None else round(eta, 1),
                    "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
            self._last_write = now


class StageProgress:
    """One stage's reporter: ``progress(message, fraction)`` (fraction of the stage, 0–1)."""

    takes_fraction = True

    def __init__(self, parent: Progress, name: str):
        self.parent, self.name = parent, name

    def __call__(self, message: str | None = None, fraction: float | None = None) -> None:
        self.parent.update(message, fraction)


def report(progress, message: str | None, fraction: float | None = None) -> None:
    """Send ``message`` (and the stage's ``fraction`` done) to a :class:`StageProgress`,
    or any callable with ``takes_fraction = True``; the message alone to a plain
    callable; nothing for None."""
    if progress is None:
        return
    if getattr(progress, "takes_fraction", False):
        progress(message, fraction)
    elif message:
        progress(message)
