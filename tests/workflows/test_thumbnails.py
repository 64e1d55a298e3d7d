"""Micrograph and power-spectrum thumbnails."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.io.mrc import write_mrc
from workflows.thumbnails import block_average, power_spectrum, write_thumbnails


def test_power_spectrum_peak_of_a_grating_is_at_its_frequency():
    n, cycles = 256, 16
    x = np.arange(n)
    image = np.tile(np.cos(2 * np.pi * cycles * x / n), (n, 1)).astype(np.float32)
    ps = power_spectrum(image)
    ps[n // 2, n // 2] = 0  # ignore what is left at zero frequency
    row, col = np.unravel_index(np.argmax(ps), ps.shape)
    assert row == n // 2 and abs(col - n // 2) == cycles


def test_block_average_keeps_the_mean_and_fits_the_size():
    image = np.arange(1000 * 700, dtype=np.float32).reshape(1000, 700)
    small = block_average(image, 256)
    assert max(small.shape) <= 256 and small.shape == (250, 175)
    assert np.isclose(small.mean(), image[:1000, :700].mean(), rtol=1e-6)


def test_write_thumbnails(tmp_path):
    rng = np.random.default_rng(0)
    mic = write_mrc(tmp_path / "FoilHole_1_fractions.mrc", rng.normal(size=(600, 800)), 1.0)
    paths = write_thumbnails(mic, tmp_path / "thumbnails", size=200)
    assert [p.name for p in paths] == [
        "FoilHole_1_fractions_mic.png",
        "FoilHole_1_fractions_ps.png",
    ]
    with Image.open(paths[0]) as image:
        assert image.size == (200, 150) and image.mode == "L"
    with Image.open(paths[1]) as image:
        assert max(image.size) <= 100
