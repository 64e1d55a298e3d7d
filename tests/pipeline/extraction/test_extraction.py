"""Extraction: box geometry, edge rule, normalisation, inversion, binning, and signal."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.extraction import binned_box, extract_particles, fourier_crop


def _synthetic():
    path = Path(__file__).parents[1] / "picking" / "synthetic.py"
    spec = importlib.util.spec_from_file_location("extraction_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_centre_edge_rule_and_inversion():
    image = np.zeros((200, 300), np.float32)
    image[50, 120] = -10.0  # a dark dot: protein is dark in the micrograph
    coords = np.array([[120.0, 50.0], [5.0, 5.0], [290.0, 190.0], [150.0, 100.0]])
    out = extract_particles(image, coords, 32, 1.5)
    assert out.kept.tolist() == [0, 3]  # boxes leaving the micrograph are skipped
    first = out.images[0]
    assert np.unravel_index(np.argmax(first), first.shape) == (16, 16)  # centre at box//2, white
    assert out.pixel_size_A == 1.5 and out.box_px == 32


def test_background_is_normalised():
    rng = np.random.default_rng(0)
    image = (5.0 + 3.0 * rng.normal(size=(256, 256))).astype(np.float32)
    out = extract_particles(image, np.array([[128.0, 128.0], [60.0, 70.0]]), 64, 1.0)
    g = np.arange(64) - 32
    outside = np.hypot(g[:, None], g[None, :]) > 0.5 * 0.75 * 64
    for img in out.images:
        assert abs(img[outside].mean()) < 1e-4 and img[outside].std() == pytest.approx(
            1.0, abs=1e-4
        )


def test_binning_halves_box_and_doubles_pixel():
    yy, xx = np.mgrid[:256, :256]
    blob = np.exp(-((xx - 128) ** 2 + (yy - 128) ** 2) / (2 * 6.0**2)).astype(np.float32)
    out = extract_particles(-blob, np.array([[128.0, 128.0]]), 64, 1.0, bin_factor=2)
    assert out.box_px == 32 and out.pixel_size_A == 2.0
    img = out.images[0]
    assert np.unravel_index(np.argmax(img), img.shape) == (16, 16)
    # σ = 6 px at 1 Å/px is 3 px at 2 Å/px
    assert img[16, 19] / img[16, 16] == pytest.approx(np.exp(-0.5), abs=0.05)
    assert binned_box(100, 3) == 34
    with pytest.raises(ValueError):
        binned_box(100, 0.5)


def test_fourier_crop_keeps_mean():
    stack = np.full((2, 16, 16), 3.0, np.float32)
    np.testing.assert_allclose(fourier_crop(stack, 8), 3.0, atol=1e-5)


def test_bad_box_and_image():
    with pytest.raises(ValueError, match="even"):
        extract_particles(np.zeros((64, 64)), np.zeros((1, 2)), 31, 1.0)
    with pytest.raises(ValueError, match="2D"):
        extract_particles(np.zeros((2, 64, 64)), np.zeros((1, 2)), 16, 1.0)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_extracted_particles_correlate_with_truth_far_better_than_random_boxes():
    synthetic = _synthetic()
    image, truth = synthetic.simulate(
        (1024, 1024), 2.0, n_particles=40, n_contaminants=0, rng=np.random.default_rng(4)
    )
    box = 96
    noisy = extract_particles(image, truth.coords_px, box, 2.0)
    # truth: the noise-free CTF-applied projection (contrast image; protein dark like counts)
    clean = extract_particles(truth.clean, truth.coords_px, box, 2.0)
    assert noisy.kept.tolist() == clean.kept.tolist()
    matched = np.array([_ncc(a, b) for a, b in zip(noisy.images, clean.images, strict=True)])
    rng = np.random.default_rng(1)
    random_xy = rng.uniform(box, 1024 - box, size=(len(clean.images), 2))
    far = np.linalg.norm(random_xy[:, None] - truth.coords_px[None], axis=2).min(1) > 80
    random_boxes = extract_particles(image, random_xy[far], box, 2.0).images
    unmatched = np.array([_ncc(a, b) for a, b in zip(random_boxes, clean.images[far], strict=True)])
    assert (matched > 0.05).all()  # every particle carries its signal at 40 e/Å²
    assert matched.mean() > 10 * max(abs(unmatched.mean()), 0.01)
    assert matched.mean() - unmatched.mean() > 5 * unmatched.std()
