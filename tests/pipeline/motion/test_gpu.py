"""CPU and GPU (CuPy) runs of motion correction agree; skipped without a GPU."""

import numpy as np
import pytest

from pipeline import backend

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not backend.gpu_available()[0], reason="no usable GPU/CuPy"),
]


def test_motion_correction_cpu_equals_gpu():
    from pipeline.motion.correct import MotionOptions, correct_movie
    from pipeline.simulate.movie import SpecimenMotion

    from .synth import synthetic_movie

    frames, _, _ = synthetic_movie(
        (512, 512), n_frames=10, dose_per_frame_e_A2=3.0, motion=SpecimenMotion(10.0), seed=9
    )
    with backend.using("cpu"):
        cpu = correct_movie(frames, 1.0, 3.0, MotionOptions(patches=(3, 3)))
    with backend.using("gpu"):
        gpu = correct_movie(frames, 1.0, 3.0, MotionOptions(patches=(3, 3)))
    np.testing.assert_allclose(gpu.drift_px, cpu.drift_px, atol=0.02)
    scale = np.std(cpu.sum_dw)
    assert np.std(gpu.sum_dw - cpu.sum_dw) < 1e-3 * scale
    assert np.std(gpu.sum_nodw - cpu.sum_nodw) < 1e-3 * np.std(cpu.sum_nodw)
