import numpy as np
import pytest

from pipeline import backend
from pipeline.geometry import random_rotations
from pipeline.reconstruction import backproject, fourier
from pipeline.reconstruction.fsc import fsc

from .helpers import blob_volume

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not backend.gpu_available()[0], reason="no usable CuPy GPU")
def test_gpu_projection_and_backprojection_match_cpu():
    vol = blob_volume(32, np.random.default_rng(0))
    rots = random_rotations(300, np.random.default_rng(1))
    plane = fourier.half_plane(32)
    count = plane.count(15)
    results = {}
    for device in ("cpu", "gpu"):
        with backend.using(device):
            values = fourier.project(fourier.pad_fourier(vol), rots, plane, count)
            ones = backend.xp().ones(values.shape, dtype=backend.xp().float32)
            rec = backproject.reconstruct(values, ones, rots, plane, ssnr_default=1e3)
            results[device] = (backend.to_numpy(values), backend.to_numpy(rec))
    assert np.allclose(
        results["cpu"][0], results["gpu"][0], atol=1e-3 * np.abs(results["cpu"][0]).max()
    )
    assert fsc(results["cpu"][1], results["gpu"][1])[1:14].min() > 0.999
