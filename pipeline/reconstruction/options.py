"""Options of each reconstruction stage as typed dataclasses (recorded in ``result.json``).

Defaults were chosen on the development cases (simulated blob volumes and the demo's
apoferritin, BENCHMARKS.md issues 5 and 10); every one is settable from
``cryofac reconstruct``. Resolutions in Å, angles in degrees, fractions of one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Class2DOptions:
    """2D classification (:func:`class2d.classify_2d`)."""

    #: classes; None: grows with the particle count (:meth:`classes_for`)
    n_classes: int | None = None
    iterations: int = 6
    #: resolution the classification searches at (Å); images are cropped to match
    resolution_A: float = 20.0
    min_score: float = 0.3
    min_fraction: float = 0.2
    #: particles per class when ``n_classes`` is None (between 2 and 200 classes)
    particles_per_class: int = 300
    #: particles each iteration but the last searches (mini-batch EM; None: all): the
    #: time grows with the particle count only through the last iteration
    batch_size: int | None = 20000

    def classes_for(self, n_particles: int) -> int:
        if self.n_classes is not None:
            return self.n_classes
        return int(min(200, max(2, n_particles // self.particles_per_class)))


@dataclass(frozen=True)
class AbinitioOptions:
    """Ab-initio (:func:`abinitio.abinitio`) and the choice between its runs."""

    iterations: int = 30
    start_resolution_A: float = 35.0
    #: final resolution of ab-initio models (Å): they are low-passed there
    end_resolution_A: float = 15.0
    batch_size: int = 300
    forget: float = 0.6
    #: "sampled": each particle is added at ``samples`` poses drawn from its posterior over
    #: every pose of the grid, tempered by ``temperature`` (Monte-Carlo EM); "top" (before):
    #: at its ``top_k`` best poses, the posterior over them annealed from broad to the
    #: model's own. At 35 Å a random start's posterior spreads over ~3,000 of 6,048
    #: orientations (the ten best hold 1.7 % of it), so "top" locked in the first model's
    #: accidents. On the development pentamer (box 128, 1.5 Å/px, 1,500 particles, seed 1)
    #: 5 of 16 starts reached the right basin against 1 of 16, and end to end the map went
    #: from 24.1 / 11.1 Å to 5.7 / 3.6 Å against the truth (FSC 0.5 / 0.143; true poses
    #: 3.9 / 3.4 Å), the held-out cap's from 23.6 / 13.0 to 7.9 / 3.9 Å, for 1.1–1.6× the
    #: CPU; on seed 2 both structures still landed wrong (BENCHMARKS.md, "abinitio sampled")
    posterior: str = "sampled"
    top_k: int = 10
    samples: int = 10
    temperature: float = 1.0
    #: random starts per ab-initio run; a run of fewer than 4 × min(``batch_size``, 100)
    #: particles (400 by default; each half's own with ``independent_halves``) has one
    n_starts: int = 4
    #: the starts run side by side for this fraction of ``iterations`` before the one
    #: that best explains held-out particles goes on alone (1: each runs to the end and
    #: is judged there). Independent full runs on the development pentamer (box 128,
    #: 1.5 Å/px, 1,500 particles) land in different basins, and the held-out particles'
    #: score at 15 Å tells the right one (121 against 108–109 for the wrong ones; the
    #: truth 123); refinement never leaves a wrong one (BENCHMARKS.md, "abinitio basins")
    explore_fraction: float = 1.0 / 3.0
    #: the starts are judged this many times at even intervals of the exploration, the
    #: best ``keep_fraction`` of them going on each time (successive halving with 0.5);
    #: the last round keeps one
    rounds: int = 1
    keep_fraction: float = 0.5
    #: independent ab-initio runs per point group, each refined in full; the refinement
    #: the particles fit best is kept. For O about one run in four still leads refinement
    #: to a wrong map both halves reproduce (BENCHMARKS.md, issues 5 and 10).
    attempts: dict[str, int] = field(default_factory=lambda: {"O": 2})
    #: point groups whose ab-initio runs in a subgroup (then symmetrised): with O imposed
    #: from the start all 6 runs on the demo's apoferritin went to the same wrong map
    #: (BENCHMARKS.md, issue 5)
    subgroups: dict[str, str] = field(default_factory=lambda: {"O": "C4"})
    #: below this consistency with the full group a subgroup map is averaged unturned
    consistent: float = 0.5
    #: each gold-standard half gets its own ab-initio from its own particles (the second
    #: map aligned onto the first: turn, shift, hand), so no reference is ever shared and
    #: the half-map FSC cannot be inflated by one (False: one ab-initio on all particles)
    independent_halves: bool = True
    #: the halves' ab-initio maps agree when their FSC (after alignment) stays above 0.5
    #: out to this many times ``end_resolution_A``; otherwise each half runs again
    agreement_factor: float = 1.6
    #: extra ab-initio runs per half while the halves' maps disagree (the pair that agrees
    #: best is kept). 0: on the development pentamer (box 32, 8 Å/px, 600 particles) a
    #: retry doubled the ab-initio time and did not bring the halves' maps together
    retries: int = 0

    def attempts_for(self, symmetry: str) -> int:
        return int(self.attempts.get(symmetry.strip().upper(), 1))

    def symmetry_for(self, symmetry: str) -> str:
        text = symmetry.strip().upper()
        return self.subgroups.get(text, text)


@dataclass(frozen=True)
class RefineOptions:
    """Gold-standard refinement (:func:`refine.refine`)."""

    global_step_deg: float = 7.5
    global_iterations: int = 3
    #: cap on iterations; None: enough to march from ``initial_resolution_A`` to Nyquist
    max_iterations: int | None = None
    #: both halves start from their initial models low-passed here (Å)
    initial_resolution_A: float = 30.0
    #: the search radius grows per iteration by at most this fraction of itself (or 3
    #: Fourier pixels): marching (BENCHMARKS.md, issue 10)
    march_fraction: float = 0.2
    #: iterations after the search has marched to Nyquist, at most
    settle_iterations: int = 3
    mask_radius_frac: float = 0.45
    #: work at the smallest box that holds the current resolution (growing as it marches)
    grow_box: bool = True
    #: poses per particle in the reconstructions of the global iterations, weighted by
    #: their posterior (marginalisation, as RELION does); 1: the best pose only. On the
    #: development pentamer refined from the truth, 8 (with ``keep_best``) gave 23.96 Å
    #: against the truth, hard poses 27.67 Å, true poses 21.59 Å; end to end (development
    #: pentamer, seeds 1 and 2) 30.1 / 37.2 Å against 32.3 / 38.4 Å with 1. The claim's
    #: instability then seen came from the mask's soft edge (:class:`PostprocessOptions`).
    #: The default stays 1: with 8 and ``keep_best`` the fast demo's apoferritin map went
    #: from 9.5 Å to 18.3 Å against the truth (claimed 6.0 Å, at Nyquist, warned) and took
    #: 8 % longer (BENCHMARKS.md, merged main 2026-12-07 06:00 UTC)
    top_k: int = 1
    #: the result is the iteration whose half-maps agreed best, not the last one
    keep_best: bool = False
    #: the refinement mask (half-map FSC that sets the search radius and the Wiener
    #: filter; the references with ``mask_references``): "map": a soft mask from the two
    #: half-maps' average (low-passed to ``mask_lowpass_A``, thresholded at
    #: ``mask_threshold_frac`` of its maximum, dilated by ``mask_extend_A`` with a
    #: ``mask_edge_A`` raised-cosine edge; at least 2 and 3 pixels) inside the soft sphere
    #: of ``mask_radius_frac``; "sphere": that sphere alone. With "map" and
    #: ``mask_references`` the development cap refined from the truth (box 128, 1.5 Å/px,
    #: 1,500 particles) went from 5.89 / 3.55 Å to 4.26 / 3.45 Å against the truth (FSC
    #: 0.5 / 0.143; true poses 3.98 / 3.40 Å), its poses from 1.37° to 0.66° median error;
    #: but the CI bar test's apoferritin (O, box 32, 8 Å/px, seeds 1 and 2) then gave
    #: 26.6 / 26.1 Å maps (true poses 17.8 / 17.1 Å) with claims off Nyquist and no
    #: warning, and failed; and the held-out rod refined from the truth went from 6.77 /
    #: 3.62 Å to 7.66 / 4.04 Å (true poses 4.25 / 3.42 Å): the default stays the sphere,
    #: unmasked references (BENCHMARKS.md, recon2 2026-12-07)
    mask: str = "sphere"
    #: the references are multiplied by the refinement mask before they are projected, as
    #: RELION masks its references with the particle's diameter: the half-maps' noise
    #: outside the particle (most of the box) no longer enters every projection
    mask_references: bool = False
    mask_lowpass_A: float = 15.0
    mask_threshold_frac: float = 0.1
    mask_extend_A: float = 6.0
    mask_edge_A: float = 6.0
    #: Fourier pixels beyond the half-map resolution (FSC 0.143) that the search uses
    search_margin_px: float = 3.0
    #: every this many local iterations, a global search again (``global_step_deg``,
    #: ±1 pixel around each origin) whose polished best replaces a particle's local best
    #: only where it scores higher: particles the global iterations (at 30–15 Å) put on a
    #: pseudo-symmetric mate or any other distant wrong pose can leave it once the map
    #: tells them apart. 0: off (local moves only after ``global_iterations``). Off by
    #: default: refined from the truth (box 128, 1.5 Å/px, 1,500 particles) neither
    #: development case had particles to move — the rod's 48 % "off" sit on an exact
    #: two-fold of the rod (0.8 % > 20° modulo it), the cap's 0.1 % — and with 2 the cap
    #: moved none and cost +18 % CPU, the held-out pentamer moved 2 (+29 % CPU, the same
    #: map) (BENCHMARKS.md, rod 2026-12-07). The comparison is
    #: made against the particle's own half-map, which favours its current pose by the
    #: particle's own contribution (~7 % of the score at 12 Å for 750 particles a half)
    recheck_every: int = 0
    #: the re-check's global search uses Fourier pixels out to the iteration's search
    #: resolution or this (Å), whichever is coarser: its cost grows with their number
    recheck_resolution_A: float = 8.0


@dataclass(frozen=True)
class PostprocessOptions:
    """Solvent mask and claimed resolution (:func:`run.stage_postprocess`)."""

    #: the solvent mask: the map low-passed here (Å) ...
    mask_lowpass_A: float = 15.0
    #: ... thresholded at this fraction of its maximum ...
    mask_threshold_frac: float = 0.1
    #: ... dilated by this many pixels (at least ``mask_extend_min_A``; 0: that) ...
    mask_extend_px: float = 0.0
    mask_extend_min_A: float = 3.0
    #: ... with a raised-cosine soft edge this many pixels wide (at least
    #: ``mask_edge_min_A``). A fixed 6 Å edge is under one pixel at 8 Å/px: the
    #: mask-corrected claim then moved from 16.0 to 56.4 Å with the phase randomisation's
    #: seed on the same half-maps. Over the 20 maps of the issue-22 sweep (3 seeds each) the
    #: claim's largest spread was 3.53× with 6 Å and 1.86× with 3 pixels, and 32/60 against
    #: 11/60 claims sat at Nyquist; neither made the claims of those (wrong) maps honest
    #: (10/60 within 20 % of the truth with 6 Å, 8/60 with 3 pixels; BENCHMARKS.md, acc
    #: 2026-12-07). On the fast demo (3 Å/px) the 3-pixel edge took the downloaded map
    #: from 9.5 to 16.2 Å against the truth and its claim from 9.3 to 8.4 Å (same
    #: half-maps), so the default stays the fixed 6 Å edge (0 pixels: the minimum applies)
    mask_edge_px: float = 0.0
    mask_edge_min_A: float = 6.0
    #: the claim is measured again with a soft edge (and half the dilation) of this many
    #: pixels — or, when ``mask_edge_px`` is set, with the minimum edge; claims that
    #: differ by more than ``mask_sensitivity`` (fraction) are warned about: on the 20 maps
    #: of the issue-22 sweep no edge made claims of wrong maps honest, and on the
    #: development apoferritin (seed 1) the two edges gave 20.3 vs 16.0 Å for a map 25.7 Å
    #: from the truth
    check_edge_px: float = 3.0
    mask_sensitivity: float = 0.2
    #: half-maps agreeing (unmasked FSC 0.143) better than this many times the resolution
    #: their particles support (:func:`support.particle_support`: how well the particles
    #: fit the other half's map, and how many there are) are too similar for their
    #: particle count: warns. At the true poses the two agreed (ratio 1.00, development
    #: pentamer)
    support_factor: float = 1.25
    #: particles compared with the maps for that check, at most (time bounded)
    support_particles: int = 5000
    #: the samples-per-voxel calibration of that bound (:func:`support.particle_support`)
    support_gain: float = 1.0
    #: a claim within this factor of Nyquist (2 pixels) is a bound, not a measurement:
    #: warns. On the development apoferritin (box 32, 8 Å/px, seeds 1 and 2) both claims
    #: were Nyquist (16.0 Å) on maps 22.6 Å from the truth (true poses 17.1–17.8 Å)
    nyquist_factor: float = 1.05
    #: a mask-corrected claim more than this fraction worse than the unmasked half-maps'
    #: (which no solvent mask can make worse, only the correction failing) is not used:
    #: the unmasked FSC is the claim and a warning says so. On the 100,000-particle run
    #: (BENCHMARKS.md, issue 23) the correction gave 23.5 Å against 8.8 Å unmasked for a
    #: map 5.9 Å from the truth
    correction_tolerance: float = 0.2

    def mask_kwargs(self, pixel_size_A: float) -> dict:
        """Keywords of :func:`postprocess.soft_mask` at this pixel size (Å)."""
        return {
            "lowpass_A": self.mask_lowpass_A,
            "threshold_frac": self.mask_threshold_frac,
            "extend_A": max(self.mask_extend_min_A, self.mask_extend_px * pixel_size_A),
            "edge_A": max(self.mask_edge_min_A, self.mask_edge_px * pixel_size_A),
        }


@dataclass(frozen=True)
class ReconstructOptions:
    """The whole ``cryofac reconstruct`` run."""

    symmetry: str = "C1"
    seed: int = 0
    #: memory (MB) for particles' Fourier values and CTFs kept in memory at one box;
    #: beyond it they are computed again from the stacks on disk for every batch
    #: (:class:`workspace.StreamedStack`): bounded memory for any particle count
    resident_MB: float = 1000.0
    #: images read from disk (and Fourier-transformed) at a time
    chunk: int = 512
    class2d: Class2DOptions = field(default_factory=Class2DOptions)
    abinitio: AbinitioOptions = field(default_factory=AbinitioOptions)
    refine: RefineOptions = field(default_factory=RefineOptions)
    postprocess: PostprocessOptions = field(default_factory=PostprocessOptions)
    #: 2D classes to keep (1-based, as numbered in ``class_averages.mrcs`` and
    #: ``result.json`` ``classes_kept``) instead of the automatic selection by score and
    #: occupancy; None: automatic. A manual override after looking at the averages: the
    #: classification itself is reused, only later stages run again
    keep_classes: tuple[int, ...] | None = None
    #: refinements from different ab-initio runs whose maps agree only worse than this
    #: many times the kept map's resolution went to different maps: ``result.json`` warns
    disagreement: float = 1.5
    #: half-maps whose agreement without their spherical averages reaches only this many
    #: times worse than the claimed resolution owe it to their radial profile: warns
    spherical_factor: float = 1.5

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
