"""Template picker: FLCF in Fourier space with in-plane rotations."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.picking.evaluate import match_picks
from pipeline.picking.template import ncc_map, pick_templates, resample


def test_template_picker_finds_rotated_copies(synthetic):
    image, truth = synthetic.field(
        1024, 40, 2, n_contaminants=2, diameter_A=120.0, defocus_A=12000.0, same_particle=True
    )
    picks = pick_templates(image, 2.0, 120.0, truth.template, 2.0, ctf=truth.ctf)
    score = match_picks(picks.coords_px, truth.coords_px, 0.3 * 60.0)
    assert score.precision >= 0.9 and score.recall >= 0.9, score
    d = np.linalg.norm(picks.coords_px[:, None] - truth.contaminant_coords_px[None], axis=2)
    assert (d > 0.5 * truth.contaminant_radii_px[None]).all()
    assert picks.fom.min() > 0.2 and picks.fom.max() <= 1.0


def test_ncc_is_one_for_an_exact_copy_and_finds_the_angle():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32] - 16
    template = np.exp(-((xx - 5) ** 2 + yy**2) / 8.0) + 0.6 * np.exp(-(xx**2 + (yy - 6) ** 2) / 6.0)
    from scipy.ndimage import rotate

    image = 0.01 * rng.normal(size=(128, 128))
    placed = rotate(template, 90.0, reshape=False, order=1)
    image[40:72, 60:92] += placed  # centre at row 56, col 76
    mask = (xx**2 + yy**2 <= 14**2).astype(np.float32)
    angles = np.arange(0.0, 360.0, 30.0)
    best, best_t, best_a = ncc_map(image.astype(np.float32), template[None], mask, angles)
    r, c = np.unravel_index(np.argmax(best), best.shape)
    assert (r, c) == (56, 76)
    assert best[r, c] > 0.95
    assert angles[best_a[r, c]] == 90.0


def test_resample_preserves_centre_and_scale():
    yy, xx = np.mgrid[:64, :64] - 32
    blob = np.exp(-(xx**2 + yy**2) / (2 * 4.0**2)).astype(np.float32)
    half = resample(blob, 1.0, 2.0, 32)
    assert np.unravel_index(np.argmax(half), half.shape) == (16, 16)
    # σ of 4 px at 1 Å/px is 2 px at 2 Å/px
    profile = half[16] / half[16, 16]
    assert profile[18] == pytest.approx(np.exp(-4 / 8.0), abs=0.03)
