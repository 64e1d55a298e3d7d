"""Issue 3's motion bar on a synthetic 1024², 20-frame, 1 e/Å²/frame movie with 20 Å of
drift and 3 Å of local deformation (ground truth from tests/pipeline/motion/synth.py)."""

import numpy as np
import pytest

from pipeline.ctf_model import CTFParams
from pipeline.motion.correct import MotionError, accumulated_motion, correct_movie

from .synth import local_field, synthetic_movie
from .thon import thon_resolution_A

CTF = CTFParams(15000.0, 14000.0, 30.0)
LOCAL_A = 3.0


@pytest.fixture(scope="module")
def movie():
    frames, drift, _ = synthetic_movie(
        shape=(1024, 1024),
        n_frames=20,
        dose_per_frame_e_A2=1.0,
        drift_total_A=20.0,
        local_amplitude_A=LOCAL_A,
        ctf=CTF,
        seed=3,
    )
    return frames, drift


@pytest.fixture(scope="module")
def corrected(movie):
    frames, _ = movie
    return correct_movie(frames, 1.0, 1.0, patches=(5, 5))


@pytest.mark.slow
def test_global_shift_rms_error_below_0p3_A(movie, corrected):
    _, drift = movie
    err = corrected.drift_px - (drift - drift[0])
    rms_A = float(np.sqrt(np.mean(np.sum(err**2, axis=1)))) * 1.0
    assert rms_A <= 0.3, rms_A
    assert np.all(corrected.drift_px[0] == 0)


@pytest.mark.slow
def test_corrected_sum_thon_rings_reach_higher_resolution(movie, corrected):
    frames, _ = movie
    raw = thon_resolution_A(frames.sum(axis=0), CTF, 1.0)
    fixed = thon_resolution_A(corrected.sum_nodw, CTF, 1.0)
    weighted = thon_resolution_A(corrected.sum_dw, CTF, 1.0)
    assert fixed < 0.6 * raw, (fixed, raw)
    assert weighted < 0.6 * raw, (weighted, raw)


@pytest.mark.slow
def test_local_model_follows_the_deformation(movie, corrected):
    model = corrected.local_model
    assert model is not None
    ny, nx = 1024, 1024
    truth = local_field((ny, nx), 20, LOCAL_A, 1.0)
    ys, xs = np.meshgrid(np.linspace(100, 923, 6), np.linspace(100, 923, 6), indexing="ij")
    yi, xi = ys.astype(int), xs.astype(int)
    errors, sizes = [], []
    for f in range(20):
        fitted = model.shift(xs, ys, np.full(xs.shape, f))
        true = np.stack([truth[f, 0][yi, xi], truth[f, 1][yi, xi]], -1)
        true -= true.mean(axis=(0, 1))  # the image-wide mean belongs to the global drift
        fitted = fitted - fitted.mean(axis=(0, 1))
        errors.append(np.sum((fitted - true) ** 2, -1))
        sizes.append(np.sum(true**2, -1))
    rms_err = np.sqrt(np.mean(errors))
    rms_true = np.sqrt(np.mean(sizes))
    assert rms_err < 0.5 * rms_true, (rms_err, rms_true)


def test_accumulated_motion_early_late():
    drift = np.array([[0, 0], [3, 4], [6, 8], [6, 9]], float)  # steps 5, 5, 1 px
    total, early, late = accumulated_motion(drift, 2.0, 1.5)
    # steps start at doses 1.5, 3.0, 4.5: the first two are early (< 4 e/Å²)
    assert (total, early, late) == pytest.approx((22.0, 20.0, 2.0))


@pytest.mark.slow
def test_reported_motion_matches_truth(movie, corrected):
    _, drift = movie
    total, _, _ = accumulated_motion(drift, 1.0, 1.0)
    assert corrected.accum_motion_total_A == pytest.approx(total, rel=0.1)


def test_single_frame_and_bad_values_are_errors():
    with pytest.raises(MotionError, match="1 frame"):
        correct_movie(np.zeros((1, 64, 64), np.float32), 1.0, 1.0)
    frames = np.ones((3, 64, 64), np.float32)
    frames[1, 5, 5] = np.nan
    with pytest.raises(MotionError, match="frame 2 holds NaN"):
        correct_movie(frames, 1.0, 1.0, patches=None)
    with pytest.raises(MotionError, match="pixel size"):
        correct_movie(np.ones((3, 64, 64), np.float32), 0.0, 1.0)
