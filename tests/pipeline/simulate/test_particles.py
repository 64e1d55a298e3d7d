"""Simulated particle stacks: SNR, CTF, poses and the RELION 3.1 STAR files."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import starfile

from pipeline.ctf_model import ctf_2d
from pipeline.simulate import (
    CTFDraw,
    SimulationError,
    project,
    simulate_particle_stack,
    write_particle_stack,
)


@pytest.fixture(scope="module")
def stack(volume64):
    images, truth = simulate_particle_stack(volume64, 40, 2.5, snr=0.1, rng=7)
    clean, clean_truth = simulate_particle_stack(volume64, 40, 2.5, snr=np.inf, rng=7)
    return images, truth, clean, clean_truth


def test_measured_snr_is_the_requested_snr(stack):
    images, truth, clean, clean_truth = stack
    np.testing.assert_array_equal(truth.eulers_deg, clean_truth.eulers_deg)
    noise = images - clean
    snr = clean.var(axis=(1, 2)).mean() / noise.var()
    assert snr == pytest.approx(0.1, rel=0.15)
    # the noise is white: equal power at low and high frequency
    power = (np.abs(np.fft.rfft2(noise)) ** 2).mean(0)
    k = np.hypot(*np.meshgrid(np.fft.rfftfreq(64), np.fft.fftfreq(64)))
    assert power[(k > 0.05) & (k < 0.15)].mean() == pytest.approx(
        power[(k > 0.35) & (k < 0.45)].mean(), rel=0.15
    )


def test_clean_images_are_ctf_modulated_projections_of_the_truth_poses(stack, volume64):
    _, truth, clean, _ = stack
    proj = project(volume64, truth.rotations[:4], 2.5, truth.shifts_A[:4], method="real")
    for i in range(4):
        ctf = ctf_2d((64, 64), 2.5, truth.ctf_params(i))
        expected = np.fft.irfft2(np.fft.rfft2(proj[i]) * ctf, s=(64, 64))
        assert np.corrcoef(clean[i].ravel(), expected.ravel())[0, 1] > 0.98
        # protein is dark at low frequency (underfocus, RELION CTF sign)
        assert np.sum(np.fft.rfft2(clean[i])[0, 0].real) < 0
    other = ctf_2d((64, 64), 2.5, truth.ctf_params(1))
    wrong = np.fft.irfft2(np.fft.rfft2(proj[0]) * other, s=(64, 64))
    if abs(truth.defocus_u_A[0] - truth.defocus_u_A[1]) > 2000:
        assert np.corrcoef(clean[0].ravel(), wrong.ravel())[0, 1] < 0.9


def test_truth_ranges(stack):
    _, truth, _, _ = stack
    assert np.all(truth.defocus_u_A >= truth.defocus_v_A)
    mean = (truth.defocus_u_A + truth.defocus_v_A) / 2
    assert mean.min() >= 8000 and mean.max() <= 25000
    assert np.all(np.hypot(*truth.shifts_A.T) <= 3 * 2.5 + 1e-9)
    assert np.all((truth.eulers_deg[:, 1] >= 0) & (truth.eulers_deg[:, 1] <= 180))


def test_star_files_read_back_with_the_right_columns(stack, tmp_path):
    images, truth, _, _ = stack
    star = write_particle_stack(tmp_path, images, truth)
    data = starfile.read(star)
    optics, particles = data["optics"], data["particles"]
    for column in (
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnImagePixelSize",
        "rlnImageSize",
    ):
        assert column in optics.columns
    assert optics["rlnImagePixelSize"][0] == pytest.approx(2.5)
    assert int(optics["rlnImageSize"][0]) == 64
    assert len(particles) == 40
    assert particles["rlnImageName"][0] == "000001@particles.mrcs"
    np.testing.assert_allclose(particles["rlnDefocusU"], truth.defocus_u_A, rtol=1e-6)
    assert "rlnAngleRot" not in particles.columns  # no poses for reconstruction input
    posed = starfile.read(tmp_path / "particles_truth.star")["particles"]
    np.testing.assert_allclose(posed["rlnAngleTilt"], truth.eulers_deg[:, 1], atol=1e-4)
    np.testing.assert_allclose(posed["rlnOriginXAngst"], truth.shifts_A[:, 0], atol=1e-4)
    with mrcfile.open(tmp_path / "particles.mrcs") as handle:
        assert handle.data.shape == (40, 64, 64)
        assert handle.voxel_size.x == pytest.approx(2.5)
        np.testing.assert_allclose(handle.data[3], -images[3])  # protein white on disk
    from pipeline.io.particles import read_particles_star

    assert len(read_particles_star(star)) == 40


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n=0),
        dict(snr=-1.0),
        dict(pixel_size_A=0.0),
        dict(ctfs=CTFDraw(defocus_range_A=(-5, 10))),
    ],
)
def test_bad_parameters_raise(volume64, kwargs):
    args = dict(n=3, pixel_size_A=2.5) | kwargs
    with pytest.raises(SimulationError):
        simulate_particle_stack(volume64, **args)
