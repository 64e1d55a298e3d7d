"""``cryofac reconstruct``: particles (RELION 3.1 STAR, no poses) → map, half-maps, FSC, poses."""

from __future__ import annotations

import dataclasses
import sys

import click

from pipeline.cli import device_options, option, select_device

_AT_LEAST_1 = click.IntRange(min=1)
_RESOLUTION = click.FloatRange(min=1.0)  # Å; the images are cropped to match ([crops])
_MARCH = "Most the refinement's search radius grows per iteration (fraction of itself)."
_GLOBAL = "Refinement iterations with a global orientation search (local searches after)."


@click.command()
@click.argument("particles", type=click.Path(dir_okay=False))
@option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output (resumable)."
)
@option("--symmetry", default="C1", help="Point group: Cn, Dn, T or O.")
@option("--classes", "n_classes", type=_AT_LEAST_1, help="2D classes [1 per 300 particles, 2–200].")
@option("--class-iterations", default=6, type=_AT_LEAST_1)
@option(
    "--class-resolution", default=20.0, type=_RESOLUTION, help="Å of 2D classification [crops]."
)
@option("--abinitio-iterations", default=30, type=_AT_LEAST_1)
@option(
    "--abinitio-resolution", default=15.0, type=_RESOLUTION, help="Å of the ab-initio map [crops]."
)
@option(
    "--abinitio-starts",
    default=4,
    type=_AT_LEAST_1,
    help="Random starts per ab-initio run; the one that best explains held-out particles goes on.",
)
@option(
    "--abinitio-explore",
    default=1.0 / 3.0,
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    help="Fraction of the ab-initio iterations the starts run side by side before they "
    "are judged [1/3; 1: each start runs to the end, the best at the end is kept].",
)
@option(
    "--abinitio-rounds",
    default=1,
    type=_AT_LEAST_1,
    help="Times the starts are judged during the exploration, the better half going on "
    "each time (successive halving) [1].",
)
@option(
    "--abinitio-posterior",
    type=click.Choice(["sampled", "top"]),
    default="sampled",
    help="Poses each particle adds to the ab-initio model: ones drawn from its posterior "
    "over every orientation, or its best ones with an annealed posterior (before) [sampled].",
)
@option(
    "--abinitio-attempts", type=_AT_LEAST_1, help="Ab-initio runs, best kept [2 for O, else 1]."
)
@option(
    "--shared-abinitio",
    is_flag=True,
    help="One ab-initio model for both gold-standard halves (default: each half gets its "
    "own, from its own particles, so that no reference is shared).",
)
@option(
    "--abinitio-retries",
    default=0,
    type=click.IntRange(min=0),
    help="Extra ab-initio runs per half while the halves' models disagree.",
)
@option(
    "--refine-iterations",
    type=_AT_LEAST_1,
    help="Most refinement iterations [default: enough for the search to march from 30 Å "
    "to Nyquist, plus --settle-iterations; it stops earlier once the resolution stops improving].",
)
@option("--march-fraction", default=0.2, type=click.FloatRange(min=0.01), help=_MARCH)
@option("--settle-iterations", default=3, type=click.IntRange(min=0))
@option("--global-iterations", default=3, type=_AT_LEAST_1, help=_GLOBAL)
@option(
    "--fixed-box", is_flag=True, help="Refine at the full box (default: grows with resolution)."
)
@option(
    "--refine-top-k",
    default=1,
    type=_AT_LEAST_1,
    help="Poses per particle in the global iterations' maps, weighted by their posterior.",
)
@option(
    "--keep-best/--keep-last",
    default=False,
    help="Keep the refinement iteration whose half-maps agreed best, or the last one.",
)
@option(
    "--refine-mask",
    default="sphere",
    type=click.Choice(["map", "sphere"]),
    help="Refinement mask: a soft mask from the half-maps (in the soft sphere) or the "
    "sphere alone.",
)
@option(
    "--mask-references/--no-mask-references",
    default=False,
    help="Multiply the references by the refinement mask before projecting them.",
)
@option(
    "--search-margin",
    default=3.0,
    type=click.FloatRange(min=0.0),
    help="Fourier pixels beyond the half-map resolution that the refinement searches.",
)
@option(
    "--recheck-every",
    default=0,
    type=click.IntRange(min=0),
    help="Every N local refinement iterations, search each particle globally again and "
    "keep the global best where it scores higher (leaves pseudo-symmetric mates); 0: off.",
)
@option(
    "--recheck-resolution",
    default=8.0,
    type=click.FloatRange(min=0.0, min_open=True),
    help="Finest resolution (Å) the global re-check searches at.",
)
@option(
    "--keep-classes",
    default=None,
    metavar="LIST",
    help="2D classes to keep, e.g. 1,4,7 (numbers as in class_averages.mrcs), instead of "
    "the automatic selection; rerunning into the same --out reuses the classification.",
)
@option("--seed", default=0, type=int, help="Random seed (half split, starts).")
@option(
    "--memory",
    "resident_mb",
    default=1000.0,
    type=click.FloatRange(min=0.0),
    help="MB of particle data kept in memory at one box; beyond it images are read from "
    "disk for every batch (bounded memory for any particle count).",
)
@device_options
def reconstruct(
    particles: str,
    out_dir: str,
    symmetry: str,
    n_classes: int | None,
    class_iterations: int,
    class_resolution: float,
    abinitio_iterations: int,
    abinitio_resolution: float,
    abinitio_starts: int,
    abinitio_explore: float,
    abinitio_rounds: int,
    abinitio_posterior: str,
    abinitio_attempts: int | None,
    shared_abinitio: bool,
    abinitio_retries: int,
    refine_iterations: int | None,
    march_fraction: float,
    settle_iterations: int,
    global_iterations: int,
    fixed_box: bool,
    refine_top_k: int,
    keep_best: bool,
    refine_mask: str,
    mask_references: bool,
    search_margin: float,
    recheck_every: int,
    recheck_resolution: float,
    keep_classes: str | None,
    seed: int,
    resident_mb: float,
    device: str,
    threads: int | None,
) -> None:
    """From particles to a map: 2D classification, ab-initio, gold-standard refinement, FSC.

    PARTICLES is a RELION 3.1 particles STAR file with CTF parameters and no poses.
    Writes map.mrc, half1.mrc, half2.mrc, mask.mrc, fsc.star, particles.star,
    particles.cs, fsc.png, slices.png and result.json into --out, and progress.json
    while it runs; rerunning reuses the stages already finished there with the same
    inputs and options. Progress: a bar on a terminal, one line per step otherwise.
    """
    select_device(device, threads)
    from pipeline.reconstruction.options import (
        AbinitioOptions,
        Class2DOptions,
        ReconstructOptions,
        RefineOptions,
    )
    from pipeline.reconstruction.progress import Progress
    from pipeline.reconstruction.run import run_reconstruction

    abinitio = AbinitioOptions(
        iterations=abinitio_iterations,
        end_resolution_A=abinitio_resolution,
        n_starts=abinitio_starts,
        explore_fraction=abinitio_explore,
        rounds=abinitio_rounds,
        posterior=abinitio_posterior,
        independent_halves=not shared_abinitio,
        retries=abinitio_retries,
    )
    if abinitio_attempts is not None:
        abinitio = dataclasses.replace(
            abinitio, attempts={symmetry.strip().upper(): abinitio_attempts}
        )
    options = ReconstructOptions(
        symmetry=symmetry,
        seed=seed,
        keep_classes=_class_list(keep_classes),
        resident_MB=resident_mb,
        class2d=Class2DOptions(
            n_classes=n_classes, iterations=class_iterations, resolution_A=class_resolution
        ),
        abinitio=abinitio,
        refine=RefineOptions(
            max_iterations=refine_iterations,
            march_fraction=march_fraction,
            settle_iterations=settle_iterations,
            global_iterations=global_iterations,
            grow_box=not fixed_box,
            top_k=refine_top_k,
            keep_best=keep_best,
            mask=refine_mask,
            mask_references=mask_references,
            search_margin_px=search_margin,
            recheck_every=recheck_every,
            recheck_resolution_A=recheck_resolution,
        ),
    )
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(
            total=100,
            desc="reconstruct",
            unit="%",
            file=sys.stderr,
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}] {postfix}",
        )
        tracker = Progress(out_dir, bar=bar)
    else:
        tracker = Progress(out_dir, sink=lambda line: print(line, flush=True))
    try:
        result = run_reconstruction(particles, out_dir, options, progress=tracker)
    finally:
        if bar is not None:
            bar.close()
    how = "unmasked" if result.get("mask_correction_failed") else "mask-corrected"
    click.echo(
        f"{out_dir}/map.mrc: {result['resolution_A']:.2f} Å ({how} FSC 0.143), "
        f"B = {result['b_factor_A2']:.0f} Å², {result['n_particles']} particles"
    )
    for warning in result.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)


def _class_list(text: str | None) -> tuple[int, ...] | None:
    """``--keep-classes`` "1,4, 7" → (1, 4, 7); None when not given."""
    if text is None:
        return None
    try:
        numbers = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: give class numbers separated by commas, e.g. 1,4,7",
            param_hint="--keep-classes",
        ) from None
    if not numbers:
        raise click.BadParameter("no class numbers given", param_hint="--keep-classes")
    return numbers
