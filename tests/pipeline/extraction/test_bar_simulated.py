"""Issue 4's bar for extraction on the project's simulator: particles extracted at the picks
correlate with the truth — the particle's projection at its true pose, CTF-applied, at its
true position in the box — far better than random boxes do; the stack round-trips through
particles.star and particles.cs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.ctf_model import CTFParams, ctf_2d
from pipeline.extraction import extract_particles, fourier_crop
from pipeline.geometry import euler_to_matrix
from pipeline.io.cs import read_cs, write_cs
from pipeline.io.particles import (
    ParticleTable,
    make_optics,
    read_particles_star,
    write_particles_star,
)
from pipeline.picking.blob import pick_blobs
from pipeline.simulate import micrograph as simulate
from pipeline.simulate import projection
from pipeline.simulate import volume as volume_module


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.slow
def test_extracted_particles_match_truth_and_formats_round_trip(tmp_path):
    volume = volume_module.reference_volume(160, 1.0)
    ctf = CTFParams(15300.0, 14700.0, 20.0)
    image, truth = simulate.simulate_micrograph(
        volume, (1024, 1024), 1.0, n_particles=30, ctf=ctf, dose_e_A2=40.0, n_contaminants=1, rng=31
    )
    diameter = truth.particle_diameter_A
    box = volume.shape[0]  # 160 px = 1.2 × diameter
    picks = pick_blobs(image, 1.0, diameter, ctf=truth.ctf)
    particles = extract_particles(image, picks.coords_px, box, 1.0, bin_factor=2)
    assert len(particles.kept) >= 15
    # truth for each extracted pick: the nearest true particle, projected at its pose,
    # placed where it sits in the box (box centre = rounded pick), CTF applied, contrast
    # inverted like the extracted images, binned the same way
    kept_xy = picks.coords_px[particles.kept]
    nearest = np.linalg.norm(kept_xy[:, None] - truth.coords_px[None], axis=2).argmin(1)
    offset_px = truth.coords_px[nearest] - np.rint(kept_xy)
    rotations = euler_to_matrix(*truth.eulers_deg[nearest].T)
    proj = projection.project(volume, rotations, 1.0, shifts_A=-offset_px, method="fourier")
    ctf_values = np.asarray(ctf_2d((box, box), 1.0, truth.ctf, rfft=True))
    applied = np.fft.irfft2(np.fft.rfft2(proj) * ctf_values, s=(box, box))
    reference = np.asarray(fourier_crop(-applied.astype(np.float32), particles.box_px))
    matched = np.array([_ncc(a, b) for a, b in zip(particles.images, reference, strict=True)])
    # random boxes away from every particle, against the same truth images
    rng = np.random.default_rng(0)
    xy = rng.uniform(box, 1024 - box, size=(400, 2))
    far = np.linalg.norm(xy[:, None] - truth.coords_px[None], axis=2).min(1) > 0.8 * diameter
    random_boxes = extract_particles(image, xy[far], box, 1.0, bin_factor=2).images
    n = min(len(random_boxes), len(reference))
    unmatched = np.array([_ncc(a, b) for a, b in zip(random_boxes[:n], reference[:n], strict=True)])
    assert n >= 10
    assert matched.mean() > 0.1
    assert matched.mean() - unmatched.mean() > 5 * unmatched.std(), (matched, unmatched)
    assert np.median(matched) > np.percentile(unmatched, 99)

    # the same particles through RELION STAR and cryoSPARC .cs
    n_kept = len(particles.kept)
    table = ParticleTable(
        make_optics(particles.pixel_size_A, particles.box_px, micrograph_pixel_size_A=1.0),
        pd.DataFrame(
            {
                "rlnImageName": [f"{i + 1:06d}@Particles/mic.mrcs" for i in range(n_kept)],
                "rlnMicrographName": ["mic.mrc"] * n_kept,
                "rlnCoordinateX": picks.coords_px[particles.kept, 0],
                "rlnCoordinateY": picks.coords_px[particles.kept, 1],
                "rlnOpticsGroup": 1,
                "rlnDefocusU": truth.ctf.defocus_u_A,
                "rlnDefocusV": truth.ctf.defocus_v_A,
                "rlnDefocusAngle": truth.ctf.defocus_angle_deg,
            }
        ),
    )
    star = read_particles_star(write_particles_star(tmp_path / "particles.star", table))
    cs = read_cs(write_cs(tmp_path / "particles.cs", table, {"mic.mrc": (1024, 1024)}))
    for back in (star, cs):
        np.testing.assert_allclose(
            back.particles["rlnCoordinateX"], table.particles["rlnCoordinateX"], atol=0.05
        )
        assert list(back.particles["rlnImageName"]) == list(table.particles["rlnImageName"])
        assert back.optics["rlnImagePixelSize"].iloc[0] == pytest.approx(2.0)
