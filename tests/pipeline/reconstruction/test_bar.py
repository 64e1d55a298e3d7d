"""Issue 22's trust bar on CI-sized cases: PDB-derived shapes of
:mod:`pipeline.simulate.assemblies` simulated by pipeline.simulate (per-particle CTF,
random poses and shifts, SNR 0.05), poses not given — the same cases as
``benchmarks/bench_reconstruct_structures.py --box 32 --pixel 8 --particles 600
--abinitio-iterations 15 --abinitio-starts 2`` on the development structures (two seeds
each; the held-out ones are reported by the benchmark only). Each half's ~300 particles
are under ab-initio's floor for several starts (400), so each half runs one start.

Issue 22's ACCURACY bar (≥ 90 % of runs within 1.2 × the resolution of the same particles
at their TRUE poses) is NOT met by the code (BENCHMARKS.md, acc 2026-12-07b: ab-initio
lands in wrong maps), and neither is its claim bar (the claim within 20 % of the map's
resolution against the truth). What this test asserts, on EVERY case, is what is met:

- a map off the accuracy bar is warned about in ``result.json`` in plain words;
- a claimed resolution (mask-corrected half-map FSC 0.143) more than 20 % off the map's
  resolution against the truth (FSC 0.5 after aligning orientation, shift and hand) is
  warned about;
- a map within both bars gets no warning;
- the particle-support check and the mask's options are recorded.
"""

import pytest

from pipeline.reconstruction.options import AbinitioOptions, ReconstructOptions
from pipeline.simulate import particles as simulate
from pipeline.simulate.assemblies import assembly_volume

BOX, PIXEL_A, N_PARTICLES, SNR = 32, 8.0, 600, 0.05
CASES = [
    ("pentamer", "C1", 1),
    ("pentamer", "C1", 2),
    ("apoferritin", "O", 1),
    ("apoferritin", "O", 2),
]


@pytest.mark.slow
@pytest.mark.parametrize(("structure", "symmetry", "seed"), CASES)
def test_a_map_or_claim_off_the_bar_is_warned(tmp_path, structure, symmetry, seed):
    from pipeline.reconstruction.run import run_reconstruction
    from pipeline.reconstruction.truth import found_resolution, true_pose_resolution

    volume = assembly_volume(structure, BOX, PIXEL_A)
    images, truth = simulate.simulate_particle_stack(
        volume, N_PARTICLES, PIXEL_A, snr=SNR, rng=1000 * seed + 7
    )
    star = simulate.write_particle_stack(tmp_path / "stack", images, truth)
    options = ReconstructOptions(
        symmetry=symmetry, seed=seed, abinitio=AbinitioOptions(iterations=15, n_starts=2)
    )
    result = run_reconstruction(star, tmp_path / "run", options)
    res_true = true_pose_resolution(star, truth, volume, symmetry)
    res_found, _ = found_resolution(tmp_path / "run", volume, PIXEL_A)
    claimed = result["resolution_A"]
    warned = bool(result["warnings"])
    print(f"{structure} seed {seed}: true poses {res_true:.2f} Å, found {res_found:.2f} Å, "
          f"claimed {claimed:.2f} Å, support {result['particle_support']}, "
          f"warnings {result['warnings']}")  # fmt: skip
    accurate = res_found <= 1.2 * res_true
    honest = abs(claimed - res_found) <= 0.2 * res_found
    assert accurate or warned, "a map off the accuracy bar was not warned about"
    assert honest or warned, "a claim more than 20 % off was not warned about"
    if accurate and honest:
        assert not warned, result["warnings"]
    assert result["particle_support"]["supported_A"] > 0
    assert "mask_edge_px" in result["options"]["postprocess"]
