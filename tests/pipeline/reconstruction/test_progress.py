"""The reconstruction's ETA on a run whose stages do not take their weights' shares."""

from __future__ import annotations

import pytest

from pipeline.reconstruction.progress import STAGE_WEIGHTS, Progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def run_until(progress: Progress, clock: Clock, seconds: dict[str, float], stop: str, f: float):
    """Run the stages taking ``seconds`` each; stop ``f`` of the way into ``stop``."""
    for name in STAGE_WEIGHTS:
        stage = progress.stage(name)
        if name == stop:
            clock.t += seconds[name] * f
            stage(f"{name} half way", f)
            return
        clock.t += seconds[name]
        stage(f"{name} done", 1.0)


#: seconds per stage of two runs: the 100,000-particle run of box 128 (refinement 72 %) and
#: a small run whose ab-initio took longest (2,000 particles, ab-initio 61 %)
RUNS = {
    "100k": {"load": 100, "class2d": 1080, "abinitio": 470, "refine": 4340, "postprocess": 10},
    "small": {"load": 24, "class2d": 36, "abinitio": 1500, "refine": 900, "postprocess": 10},
}


@pytest.mark.parametrize("run", sorted(RUNS))
@pytest.mark.parametrize("f", [0.1, 0.3, 0.6])
def test_eta_in_refinement_follows_its_own_pace(tmp_path, run, f):
    seconds = RUNS[run]
    clock = Clock()
    progress = Progress(tmp_path, clock=clock)
    run_until(progress, clock, seconds, "refine", f)
    truth = seconds["refine"] * (1 - f) + seconds["postprocess"]
    assert progress.eta_s() == pytest.approx(truth, rel=0.12)
    if run == "small":  # the whole run's pace over the weights (the rule before): 2-3x
        frac = progress.fraction()
        assert clock.t * (1 - frac) / frac > 2 * truth


def test_eta_before_and_after(tmp_path):
    clock = Clock()
    progress = Progress(tmp_path, clock=clock)
    assert progress.eta_s() is None
    progress.stage("load")
    clock.t += 1.0
    progress.update("reading", 0.01)
    assert progress.eta_s() is None  # too early to say
    progress.finish()
    assert progress.eta_s() == 0.0
