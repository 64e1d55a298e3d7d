"""The simulator on the GPU backend gives the CPU results (skipped without a usable GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import backend
from pipeline.ctf_model import CTFParams

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not backend.gpu_available()[0], reason="no usable CuPy GPU"),
]


def test_particle_stack_on_gpu_matches_cpu(volume64):
    from pipeline.simulate import simulate_particle_stack

    cpu, _ = simulate_particle_stack(volume64, 8, 2.5, snr=np.inf, rng=3)
    with backend.using("gpu"):
        gpu, _ = simulate_particle_stack(volume64, 8, 2.5, snr=np.inf, rng=3)
    assert isinstance(gpu, np.ndarray)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-3 * np.abs(cpu).max())


def test_micrograph_on_gpu_matches_cpu(volume64):
    from pipeline.simulate import simulate_micrograph

    ctf = CTFParams(15000.0, 14000.0, 10.0)
    kwargs = dict(ctf=ctf, n_particles=3, rng=5, noise=False)
    cpu, _ = simulate_micrograph(volume64, (256, 256), 2.5, **kwargs)
    with backend.using("gpu"):
        gpu, _ = simulate_micrograph(volume64, (256, 256), 2.5, **kwargs)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3)
