"""Blob (LoG) picker on synthetic micrographs with known particle and contaminant centres."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.picking.blob import pick_blobs
from pipeline.picking.evaluate import match_picks


@pytest.mark.parametrize("seed,defocus_A", [(0, 10000.0), (1, 25000.0)])
def test_blob_picker_precision_recall_and_contaminants(synthetic, seed, defocus_A):
    image, truth = synthetic.field(
        1024, 40, seed, n_contaminants=2, diameter_A=120.0, defocus_A=defocus_A
    )
    picks = pick_blobs(image, 2.0, 120.0, ctf=truth.ctf)
    score = match_picks(picks.coords_px, truth.coords_px, 0.3 * 120.0 / 2.0)
    assert score.precision >= 0.9 and score.recall >= 0.9, score
    centres = truth.contaminant_coords_px
    d = np.linalg.norm(picks.coords_px[:, None] - centres[None], axis=2)
    assert (d > 0.5 * truth.contaminant_radii_px[None]).all(), "a pick sits on a contaminant"
    assert len(picks.rejected["contamination"]) > 0  # the screen was exercised
    # positional accuracy: matched picks within a few Å of the truth
    nearest = np.linalg.norm(picks.coords_px[:, None] - truth.coords_px[None], axis=2).min(1)
    assert np.median(nearest) * 2.0 < 8.0
    assert np.all(np.diff(picks.fom) <= 1e-9)  # sorted best first


@pytest.mark.parametrize("seed,defocus_A", [(0, 10000.0), (1, 25000.0)])
def test_any_shape_picks_round_particles_as_well(synthetic, seed, defocus_A):
    """shape "any" (elongated and round kernels, response summed over the particle) on
    round particles: every particle found, at its centre, nothing on the contaminants.

    Precision is NOT asserted: on this high-contrast synthetic the narrow kernels fit the
    fringes around each particle and the picker adds false picks about 1.1 diameters
    from strong particles (precision 0.49 and 0.97 on these two fields, against 1.0
    with ``shape="round"``; BENCHMARKS.md "pick3", "pick4"). Use ``shape="round"`` for
    round particles."""
    image, truth = synthetic.field(
        1024, 40, seed, n_contaminants=2, diameter_A=120.0, defocus_A=defocus_A
    )
    picks = pick_blobs(image, 2.0, 120.0, ctf=truth.ctf, shape="any")
    score = match_picks(picks.coords_px, truth.coords_px, 0.3 * 120.0 / 2.0)
    assert score.recall >= 0.95, score
    nearest = np.linalg.norm(picks.coords_px[:, None] - truth.coords_px[None], axis=2).min(1)
    matched = nearest < 0.3 * 120.0 / 2.0
    assert np.median(nearest[matched]) * 2.0 < 10.0
    centres = truth.contaminant_coords_px
    d = np.linalg.norm(picks.coords_px[:, None] - centres[None], axis=2)
    assert (d > 0.5 * truth.contaminant_radii_px[None]).all(), "a pick sits on a contaminant"


def test_each_any_shape_option_changes_the_picks(synthetic):
    image, truth = synthetic.field(1024, 40, 0, n_contaminants=2, diameter_A=120.0)
    base = pick_blobs(image, 2.0, 120.0, ctf=truth.ctf, shape="any")
    for option in ({"any_min_fraction": 0.6}, {"aggregate_sigma": 0.0}):
        other = pick_blobs(image, 2.0, 120.0, ctf=truth.ctf, shape="any", **option)
        same = len(other) == len(base) and np.allclose(other.fom, base.fom)
        assert not same, option
    with pytest.raises(ValueError, match="particle shape"):
        pick_blobs(image, 2.0, 120.0, shape="banana")


def test_any_shape_threshold_follows_the_cells_per_pick():
    """Noise peaks above a threshold grow with the area (in particle-sized cells), picks of
    particles with their number: the threshold rises with cells per pick, by the noise
    tail's scale s per factor e, and not at all for a larger field as full as before."""
    from pipeline.picking.blob import ANY_CELLS_PER_PICK, ANY_THRESHOLD, any_threshold

    def flat(n):  # n picks at every score up to 8 SDs
        return lambda t: n if t <= 8.0 else 0

    reference = ANY_CELLS_PER_PICK * 56
    assert any_threshold(reference, flat(56)) == ANY_THRESHOLD
    assert any_threshold(0.1 * reference, flat(56)) == ANY_THRESHOLD  # never lower
    four = any_threshold(4 * reference, flat(56))
    assert four == pytest.approx(ANY_THRESHOLD + 1.5 * math.log(4.0), abs=2e-3)
    assert any_threshold(4 * reference, flat(4 * 56)) == ANY_THRESHOLD

    def tail(t):  # 20 particles at 10 SDs over an exponential tail of noise peaks
        return 20 * (t <= 10.0) + int(100 * math.exp(-(t - 2.0) / 1.5))

    threshold = any_threshold(4000.0, tail)  # fixed point: rises until the bound holds
    bound = ANY_THRESHOLD + 1.5 * math.log(4000.0 / (ANY_CELLS_PER_PICK * tail(threshold)))
    assert threshold > 4.0 and bound <= threshold + 1e-3
    assert tail(threshold) >= 20  # the particles stay


def test_sparse_field_threshold_rises_and_drops_noise_picks():
    """Twenty apoferritins on a 2048² micrograph at 1.5 Å/px (~1,700 particle-sized cells,
    mostly bare ice; the project's simulator): with pick3's fixed 2 background SDs the
    any-shape search picked ~160 peaks for 20 particles (issue 21's mixture: most false
    picks on empty ice); the threshold from the cells per pick drops some and keeps every
    particle. Precision stays far below 0.9 (0.12 → 0.15 when written, BENCHMARKS.md
    "pick4"): the noise peaks are counted as picks, so a sparse field is not solved."""
    from pipeline.ctf_model import CTFParams
    from pipeline.simulate.assemblies import assembly_mass_kDa, assembly_volume
    from pipeline.simulate.micrograph import protein_volume_A3, simulate_micrograph

    image, truth = simulate_micrograph(
        assembly_volume("apoferritin", 100, 1.5),
        (2048, 2048),
        1.5,
        n_particles=20,
        ctf=CTFParams(15200.0, 14800.0, 30.0),
        n_contaminants=0,
        ice_thickness_A=450.0,
        rng=1,
        excluded_volume_A3=protein_volume_A3(assembly_mass_kDa("apoferritin") / 0.93),
    )
    fixed = pick_blobs(image, 1.5, 130.0, shape="any", threshold_sigma=2.0)
    picks = pick_blobs(image, 1.5, 130.0, shape="any")
    before = match_picks(fixed.coords_px, truth.coords_px, 0.2 * 130.0 / 1.5)
    after = match_picks(picks.coords_px, truth.coords_px, 0.2 * 130.0 / 1.5)
    assert before.recall == 1.0 and after.recall == 1.0, (before, after)
    assert after.n_picks <= 0.9 * before.n_picks, (before, after)
    assert len(picks.rejected["below_threshold"]) > len(fixed.rejected["below_threshold"])


def test_blob_picker_without_ctf_inverts_contrast(synthetic):
    image, truth = synthetic.field(768, 20, 5)
    picks = pick_blobs(image, 2.0, 140.0)
    score = match_picks(picks.coords_px, truth.coords_px, 0.3 * 140.0 / 2.0)
    assert score.precision >= 0.85 and score.recall >= 0.85, score


def test_empty_area_picks_are_weak_and_thresholded_away(synthetic):
    """Left half pure shot noise: its peaks score well below every particle."""
    image, truth = synthetic.field(1024, 40, 3)
    image[:, :512] = np.random.default_rng(13).poisson(160.0, size=(1024, 512))
    right = truth.coords_px[truth.coords_px[:, 0] > 512 + 35]
    picks = pick_blobs(image, 2.0, 140.0, ctf=truth.ctf)
    left = picks.coords_px[:, 0] < 512 - 35
    assert match_picks(picks.coords_px, right, 21.0).recall == 1.0
    nearest = np.linalg.norm(picks.coords_px[:, None] - right[None], axis=2).min(1)
    assert picks.fom[left].max(initial=0) < picks.fom[nearest < 21].min()
    strict = pick_blobs(image, 2.0, 140.0, ctf=truth.ctf, threshold_sigma=6.0)
    assert (strict.coords_px[:, 0] < 512 - 35).sum() == 0
    assert match_picks(strict.coords_px, right, 21.0).recall == 1.0


def test_carbon_edge_is_not_picked(synthetic):
    image, truth = synthetic.field(1024, 30, 7)
    # a carbon film over the left third: thicker, strongly scattering, with a sharp edge
    edge_col = 340
    carbon = np.zeros_like(image)
    carbon[:, :edge_col] = 1.0
    image = (image * np.exp(-1.2 * carbon)).astype(np.float32)
    picks = pick_blobs(image, 2.0, 140.0, ctf=truth.ctf)
    on_edge = np.abs(picks.coords_px[:, 0] - edge_col) < 0.3 * 70
    assert on_edge.sum() == 0, picks.coords_px[on_edge]


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="2D"):
        pick_blobs(np.zeros((2, 64, 64)), 1.0, 20.0)
    with pytest.raises(ValueError, match="too small"):
        pick_blobs(np.zeros((64, 64)), 1.0, 50.0)
    with pytest.raises(ValueError, match="must be > 0"):
        pick_blobs(np.zeros((64, 64)), 0.0, 50.0)


def test_decoy_threshold_keeps_precision_on_a_sparse_field(synthetic):
    """Twenty apoferritins on a 2048² micrograph (450 Å ice, 1.5 µm defocus, the unit
    test's sparse field above): the cells-per-pick rule keeps ~135 picks (P 0.15); the
    threshold from the contrast-inverted decoy's noise peaks keeps the 20 particles and
    few noise peaks (BENCHMARKS.md "pick5")."""
    from pipeline.picking.blob import DecoyThreshold

    image, truth = synthetic.apoferritin_field(2048, 20, 15000.0, 450.0, 1)
    cells = pick_blobs(image, 1.5, 130.0, shape="any")
    decoy = pick_blobs(image, 1.5, 130.0, shape="any", decoy=DecoyThreshold())
    tolerance = 0.2 * 130.0 / 1.5
    before = match_picks(cells.coords_px, truth.coords_px, tolerance)
    after = match_picks(decoy.coords_px, truth.coords_px, tolerance)
    assert after.recall == 1.0, after
    assert after.precision >= 0.9, (before, after)


def test_decoy_threshold_keeps_recall_on_a_crowded_field(synthetic):
    """A crowded field (150 apoferritins on 1536², 450 Å ice, 1.2 µm defocus): little bare
    ice; the decoy's peaks in the gaps between particles and inside the hollow shells lie
    near the picks and are not counted as noise, so the threshold stays low enough to keep
    nearly every particle. Counting them (a small exclusion radius) loses particles."""
    from pipeline.picking.blob import DecoyThreshold

    image, truth = synthetic.apoferritin_field(1536, 150, 12000.0, 450.0, 2)
    tolerance = 0.2 * 130.0 / 1.5
    picks = pick_blobs(image, 1.5, 130.0, shape="any", decoy=DecoyThreshold())
    score = match_picks(picks.coords_px, truth.coords_px, tolerance)
    assert score.recall >= 0.97 and score.precision >= 0.95, score
    near = DecoyThreshold(exclusion_fraction=0.3)
    counted = pick_blobs(image, 1.5, 130.0, shape="any", decoy=near)
    assert match_picks(counted.coords_px, truth.coords_px, tolerance).recall < score.recall


def test_each_decoy_threshold_option_changes_the_picks(synthetic):
    """Every field of DecoyThreshold changes the threshold on a sparse field, where noise
    peaks sit near the threshold."""
    from pipeline.picking.blob import DecoyThreshold

    image, _ = synthetic.apoferritin_field(2048, 20, 15000.0, 450.0, 1)
    base = pick_blobs(image, 1.5, 130.0, shape="any", decoy=DecoyThreshold())
    for option in (
        {"false_pick_rate": 0.5},
        {"start_sigma": 8.0},
        {"exclusion_fraction": 0.3},
    ):
        other = pick_blobs(image, 1.5, 130.0, shape="any", decoy=DecoyThreshold(**option))
        same = len(other) == len(base) and np.allclose(other.fom, base.fom)
        assert not same, option
    with pytest.raises(ValueError, match="false_pick_rate"):
        DecoyThreshold(false_pick_rate=0.0)
    with pytest.raises(ValueError, match="exclusion_fraction"):
        DecoyThreshold(exclusion_fraction=0.0)
