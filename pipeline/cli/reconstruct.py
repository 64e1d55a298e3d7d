"""``cryofac reconstruct``: particles (RELION 3.1 STAR, no poses) → map, half-maps, FSC, poses."""

from __future__ import annotations

import sys

import click

from pipeline.cli import device_options, select_device


@click.command()
@click.argument("particles", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder (resumable).",
)
@click.option("--symmetry", default="C1", show_default=True, help="Point group: Cn, Dn, T or O.")
@click.option(
    "--classes",
    "n_classes",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="2D classes.",
)
@click.option("--class-iterations", default=6, show_default=True, type=click.IntRange(min=1))
@click.option("--abinitio-iterations", default=30, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--refine-iterations",
    default=None,
    type=click.IntRange(min=1),
    help="Most refinement iterations [default: enough for the search to march from 30 Å "
    "to Nyquist, plus 3; it stops earlier once the resolution stops improving].",
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Random seed (half split, starts)."
)
@device_options
def reconstruct(
    particles: str,
    out_dir: str,
    symmetry: str,
    n_classes: int,
    class_iterations: int,
    abinitio_iterations: int,
    refine_iterations: int | None,
    seed: int,
    device: str,
    threads: int | None,
) -> None:
    """From particles to a map: 2D classification, ab-initio, gold-standard refinement, FSC.

    PARTICLES is a RELION 3.1 particles STAR file with CTF parameters and no poses.
    Writes map.mrc, half1.mrc, half2.mrc, mask.mrc, fsc.star, particles.star,
    particles.cs, fsc.png, slices.png and result.json into --out; rerunning skips
    the stages already finished there.
    """
    select_device(device, threads)
    from pipeline.reconstruction.run import run_reconstruction

    tty = sys.stderr.isatty()
    bar = None
    if tty:
        from tqdm import tqdm

        bar = tqdm(total=None, desc="reconstruct", unit="step", file=sys.stderr, dynamic_ncols=True)

    def report(message: str) -> None:
        if bar is not None:
            bar.set_postfix_str(message)
            bar.update(1)

    try:
        result = run_reconstruction(
            particles,
            out_dir,
            symmetry=symmetry,
            n_classes=n_classes,
            class_iterations=class_iterations,
            abinitio_iterations=abinitio_iterations,
            refine_iterations=refine_iterations,
            seed=seed,
            progress=report,
        )
    finally:
        if bar is not None:
            bar.close()
    click.echo(
        f"{out_dir}/map.mrc: {result['resolution_A']:.2f} Å (FSC 0.143), "
        f"B = {result['b_factor_A2']:.0f} Å², {result['n_particles']} particles"
    )
    for warning in result.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)
