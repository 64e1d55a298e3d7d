"""Issue 3's motion bar on the simulator's movie: 1024², 20 frames, 1 e/Å²/frame, 20 Å of
drift and 3 Å of local deformation (pipeline.simulate.movie, apoferritin in ice, CTF)."""

import numpy as np
import pytest

from pipeline.ctf_model import CTFParams
from pipeline.motion.correct import (
    MotionError,
    MotionOptions,
    accumulated_motion,
    correct_movie,
)

from .thon import thon_resolution_A

CTF = CTFParams(15000.0, 14000.0, 30.0)
PIXEL_A = 1.0


@pytest.fixture(scope="module")
def movie():
    from pipeline.simulate import reference_volume
    from pipeline.simulate.movie import simulate_movie

    volume = reference_volume(128, PIXEL_A)
    # the simulator's default movie: 20 frames of 1 e/Å², 20 Å drift, 3 Å local motion
    raw, truth = simulate_movie(volume, (1024, 1024), PIXEL_A, ctf=CTF, rng=3)
    return raw, truth


@pytest.fixture(scope="module")
def corrected(movie):
    raw, truth = movie
    return correct_movie(raw * truth.gain, PIXEL_A, 1.0, MotionOptions(patches=(5, 5)))


def _grid():
    return np.mgrid[0:1024:16, 0:1024:16]


@pytest.mark.slow
def test_global_shift_rms_error_below_0p3_A(movie, corrected):
    _, truth = movie
    yy, xx = _grid()
    # a full-frame alignment measures the field-averaged motion: global + mean local
    field_mean = np.array([truth.shift_px(f, xx, yy).reshape(-1, 2).mean(0) for f in range(20)])
    field_mean -= field_mean[0]
    err = corrected.drift_px - field_mean
    rms_A = float(np.sqrt(np.mean(np.sum(err**2, axis=1)))) * PIXEL_A
    assert rms_A <= 0.3, rms_A
    assert np.all(corrected.drift_px[0] == 0)


@pytest.mark.slow
def test_local_model_reduces_the_shift_field_error(movie, corrected):
    _, truth = movie
    yy, xx = _grid()
    err_model, err_global = [], []
    for f in range(20):
        true = truth.shift_px(f, xx, yy) - truth.shift_px(0, xx, yy)
        fitted = corrected.drift_px[f] + corrected.local_model.shift(xx, yy, np.full(xx.shape, f))
        err_model.append(np.sum((fitted - true) ** 2, -1))
        err_global.append(np.sum((corrected.drift_px[f] - true) ** 2, -1))
    rms_model, rms_global = np.sqrt(np.mean(err_model)), np.sqrt(np.mean(err_global))
    assert rms_model < 0.6 * rms_global, (rms_model, rms_global)


@pytest.mark.slow
def test_corrected_sum_thon_rings_reach_higher_resolution(movie, corrected):
    raw, truth = movie
    uncorrected = thon_resolution_A((raw * truth.gain).sum(axis=0), CTF, PIXEL_A)
    fixed = thon_resolution_A(corrected.sum_nodw, CTF, PIXEL_A)
    weighted = thon_resolution_A(corrected.sum_dw, CTF, PIXEL_A)
    assert fixed < 0.6 * uncorrected, (fixed, uncorrected)
    assert weighted < 0.6 * uncorrected, (weighted, uncorrected)


@pytest.mark.slow
def test_reported_motion_matches_truth(movie, corrected):
    _, truth = movie
    assert corrected.accum_motion_total_A == pytest.approx(truth.accumulated_motion_A, rel=0.1)
    assert corrected.accum_motion_early_A + corrected.accum_motion_late_A == pytest.approx(
        corrected.accum_motion_total_A
    )


def test_accumulated_motion_early_late():
    drift = np.array([[0, 0], [3, 4], [6, 8], [6, 9]], float)  # steps 5, 5, 1 px
    total, early, late = accumulated_motion(drift, 2.0, 1.5)
    # steps start at doses 1.5, 3.0, 4.5: the first two are early (< 4 e/Å²)
    assert (total, early, late) == pytest.approx((22.0, 20.0, 2.0))


def test_tiled_sum_equals_global_fourier_shift_sum_without_local_motion():
    from pipeline.motion.correct import _sum_global, _sum_tiled
    from pipeline.motion.dose import accumulated_dose
    from pipeline.motion.patches import LocalMotionModel

    from .synth import rigid_movie

    frames, drift, _ = rigid_movie(n_frames=6, drift_total_A=6.0, seed=5)
    glob = correct_movie(frames, 1.0, 5.0, MotionOptions(patches=None))
    assert glob.local_model is None and glob.options == MotionOptions(patches=None)  # recorded
    err = glob.drift_px - (drift - drift[0])
    assert np.sqrt(np.mean(np.sum(err**2, 1))) < 0.3
    doses = accumulated_dose(6, 5.0)
    zero = LocalMotionModel(np.zeros((2, 30)), (256, 256), 6, np.zeros((1, 2)), np.zeros((1, 6, 2)))
    dw_t, nodw_t = _sum_tiled(frames, frames[0], glob.drift_px, zero, 1.0, doses, 300.0)
    dw_g, nodw_g = _sum_global(frames, frames[0], glob.drift_px, 1.0, doses, 300.0)
    inner = (slice(24, -24), slice(24, -24))  # away from the frame edge (wrap vs. padding)
    for tiled, exact in ((nodw_t, nodw_g), (dw_t, dw_g)):
        diff = tiled[inner] - exact[inner]
        # sinc tails cut at the tile margins: a few per cent on pure shot noise
        assert np.std(diff) < 0.06 * np.std(exact[inner])


def test_single_frame_and_bad_values_are_errors():
    with pytest.raises(MotionError, match="1 frame"):
        correct_movie(np.zeros((1, 64, 64), np.float32), 1.0, 1.0)
    frames = np.ones((3, 64, 64), np.float32)
    frames[1, 5, 5] = np.nan
    with pytest.raises(MotionError, match="frame 2 holds NaN"):
        correct_movie(frames, 1.0, 1.0, MotionOptions(patches=None))
    with pytest.raises(MotionError, match="pixel size"):
        correct_movie(np.ones((3, 64, 64), np.float32), 0.0, 1.0)
