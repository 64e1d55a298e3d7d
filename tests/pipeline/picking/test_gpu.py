"""The pickers on the GPU give the CPU's picks (skipped without a usable GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import backend
from pipeline.picking.blob import pick_blobs
from pipeline.picking.evaluate import match_picks

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _need_gpu():
    ok, why = backend.gpu_available()
    if not ok:
        pytest.skip(why)


def test_blob_picker_gpu_matches_cpu(synthetic):
    image, truth = synthetic.field(
        1024, 40, 0, n_contaminants=2, diameter_A=120.0, defocus_A=15000.0
    )
    cpu = pick_blobs(image, 2.0, 120.0, ctf=truth.ctf)
    with backend.using("gpu"):
        gpu = pick_blobs(image, 2.0, 120.0, ctf=truth.ctf)
    assert isinstance(gpu.coords_px, np.ndarray)
    same = match_picks(gpu.coords_px, cpu.coords_px, 2.0)
    assert same.precision >= 0.97 and same.recall >= 0.97, same


def test_extraction_gpu_matches_cpu():
    from pipeline.extraction import extract_particles

    rng = np.random.default_rng(1)
    image = rng.normal(size=(256, 256)).astype(np.float32)
    coords = np.array([[100.0, 120.0], [60.0, 70.0]])
    cpu = extract_particles(image, coords, 64, 1.0, bin_factor=2)
    with backend.using("gpu"):
        gpu = extract_particles(image, coords, 64, 1.0, bin_factor=2)
    np.testing.assert_allclose(gpu.images, cpu.images, atol=1e-4)
