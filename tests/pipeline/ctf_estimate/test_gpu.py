"""CPU and GPU (CuPy) runs of CTF estimation agree; skipped without a GPU."""

import pytest

from pipeline import backend
from pipeline.ctf_model import CTFParams

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not backend.gpu_available()[0], reason="no usable GPU/CuPy"),
]


def test_ctf_estimation_cpu_equals_gpu():
    from pipeline.ctf_estimate import estimate_ctf

    from .synth import synthetic_micrograph

    truth = CTFParams(15500.0, 14500.0, 30.0, bfactor_A2=60.0)
    image = synthetic_micrograph(truth, shape=(1024, 1024), seed=4)
    with backend.using("cpu"):
        cpu = estimate_ctf(image, 1.0).params
    with backend.using("gpu"):
        gpu = estimate_ctf(image, 1.0).params
    assert abs(gpu.defocus_u_A - cpu.defocus_u_A) < 2.0
    assert abs(gpu.defocus_v_A - cpu.defocus_v_A) < 2.0
    assert abs(gpu.defocus_angle_deg - cpu.defocus_angle_deg) < 0.2
