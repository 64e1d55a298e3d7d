"""Issue 4's bar on the project's simulator: apoferritin in 500 Å ice at 40 e/Å², 2048² at
1 Å/px, ~100 particles, 3 ice/ethane contaminants, defocus 1.0 and 2.5 µm.

Precision and recall ≥ 0.9 with one-to-one matching within 0.3 × diameter; no pick lies
inside any contaminant.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.ctf_model import CTFParams
from pipeline.picking.blob import pick_blobs
from pipeline.picking.evaluate import match_picks
from pipeline.simulate import micrograph as simulate
from pipeline.simulate import volume as volume_module


@pytest.fixture(scope="module")
def apoferritin():
    return volume_module.reference_volume(160, 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("seed,defocus_A", [(21, 10000.0), (22, 25000.0)])
def test_blob_picker_meets_the_bar(apoferritin, seed, defocus_A):
    ctf = CTFParams(defocus_A + 250.0, defocus_A - 250.0, 35.0)
    image, truth = simulate.simulate_micrograph(
        apoferritin,
        (2048, 2048),
        1.0,
        n_particles=100,
        ctf=ctf,
        dose_e_A2=40.0,
        n_contaminants=3,
        rng=seed,
    )
    assert len(truth.contaminant_coords_px) == 3
    diameter = truth.particle_diameter_A
    picks = pick_blobs(image, 1.0, diameter, ctf=truth.ctf)
    score = match_picks(picks.coords_px, truth.coords_px, 0.3 * diameter)
    assert score.precision >= 0.9, score
    assert score.recall >= 0.9, score
    d = np.linalg.norm(picks.coords_px[:, None] - truth.contaminant_coords_px[None], axis=2)
    assert (d > truth.contaminant_radii_px[None]).all(), "a pick lies on a contaminant"


@pytest.mark.slow
def test_template_picker_with_map_projections(apoferritin, tmp_path):
    """Second-pass picking: templates are projections of the map; also via the CLI."""
    from click.testing import CliRunner

    from cryofac.cli import cli
    from pipeline.io.mrc import write_mrc
    from pipeline.picking.coords import read_coordinates
    from pipeline.picking.template import pick_templates, templates_from_map

    ctf = CTFParams(18000.0, 17500.0, 10.0)
    image, truth = simulate.simulate_micrograph(
        apoferritin, (1024, 1024), 1.0, n_particles=25, ctf=ctf, n_contaminants=1, rng=41
    )
    diameter = truth.particle_diameter_A
    templates = templates_from_map(apoferritin, 1.0, 4)
    picks = pick_templates(image, 1.0, diameter, templates, 1.0, ctf=truth.ctf)
    score = match_picks(picks.coords_px, truth.coords_px, 0.3 * diameter)
    assert score.precision >= 0.9 and score.recall >= 0.9, score

    mic = write_mrc(tmp_path / "mic.mrc", image, 1.0)
    ref = write_mrc(tmp_path / "map.mrc", apoferritin, 1.0)
    result = CliRunner().invoke(
        cli,
        [
            "pick",
            str(mic),
            "--out",
            str(tmp_path / "p"),
            "--diameter",
            f"{diameter:.1f}",
            "--method",
            "template",
            "--templates",
            str(ref),
            "--template-views",
            "4",
            "--angle-step",
            "30",
        ],
    )
    assert result.exit_code == 0, result.output
    coords, _ = read_coordinates(tmp_path / "p" / "mic_autopick.star")
    assert match_picks(coords, truth.coords_px, 0.3 * diameter).f1 >= 0.85


@pytest.mark.slow
@pytest.mark.parametrize("seed", [71, 72])
def test_sparse_field_has_no_picks_in_empty_ice(apoferritin, seed):
    """Few particles in bare ice: the local-variance test removes peaks of the ice noise."""
    ctf = CTFParams(20300.0, 19700.0, 20.0)
    image, truth = simulate.simulate_micrograph(
        apoferritin, (1024, 1024), 1.0, n_particles=8, ctf=ctf, n_contaminants=0, rng=seed
    )
    picks = pick_blobs(image, 1.0, truth.particle_diameter_A, ctf=truth.ctf)
    score = match_picks(picks.coords_px, truth.coords_px, 0.3 * truth.particle_diameter_A)
    assert score.precision >= 0.9 and score.recall >= 0.9, score
