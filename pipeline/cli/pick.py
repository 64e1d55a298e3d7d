"""``cryofac pick``: blob (LoG) or template picking on micrographs.

Writes ``OUT/<stem>_autopick.star`` per micrograph (``rlnCoordinateX/Y`` in pixels,
``rlnAutopickFigureOfMerit``) and ``OUT/autopick.star`` listing them.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli import (
    POSITIVE,
    micrograph_inputs,
    option,
    read_micrograph,
    run_each,
    select_device,
)


@click.command("pick")
@micrograph_inputs(voltage_help="kV (if no optics table).")
@option("--diameter", type=POSITIVE, required=True, help="Particle diameter in Å.")
@option("--min-diameter", type=float, help="Smallest blob diameter in Å [--diameter].")
@option("--max-diameter", type=float, help="Largest blob diameter in Å [--diameter].")
@option(
    "--shape",
    type=click.Choice(["any", "round"]),
    help="Blob picking: 'any' (default) for a particle of unknown shape, --diameter its "
    "longest dimension: elongated and round kernels from 0.25 × diameter wide to the "
    "diameter long, summed over the particle so that each gives one pick at its centre; "
    "'round' for a particle known to be round: the single round kernel (the picker before "
    "2026-12-07d).",
)
@option(
    "--ctf",
    "ctf_star",
    type=click.Path(path_type=Path),
    help="micrographs_ctf.star from `cryofac ctf`: phase-flip before picking.",
)
@option("--method", type=click.Choice(["blob", "template"]), default="blob")
@option(
    "--templates",
    type=click.Path(path_type=Path),
    help="Templates for --method template: 2D class averages (.mrcs stack or 2D image, "
    "protein bright), or a 3D map (.mrc, cubic) projected at --template-views directions.",
)
@option(
    "--template-views",
    type=click.IntRange(min=1),
    default=50,
    help="Projections of a 3D template map (spread evenly over the sphere; each gets the "
    "micrograph's CTF).",
)
@option("--template-pixel-size", type=float, help="Å [default: header].")
@option(
    "--angle-step",
    type=click.FloatRange(min=0, min_open=True, max=180),
    default=10.0,
    help="In-plane rotation step of the templates, degrees.",
)
@option(
    "--threshold",
    type=float,
    help="Peak threshold: blob, background-noise SDs of the filter response [--shape "
    "round: 3.0; --shape any: per micrograph, the lowest t ≥ 2.0 with t ≥ 2.0 + 1.5 × "
    "ln(cells / (10 × picks above t)), cells = its area over (0.55 × diameter)²: higher "
    "where bare ice outnumbers the particles]; "
    "template, MAD-based SDs of the NCC map's background [4.0].",
)
@option(
    "--false-pick-rate",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    help="Blob picking with --shape any and no --threshold: per micrograph, the lowest "
    "threshold at which the noise picks expected above it are at most this fraction of the "
    "picks, counted as the peaks of the contrast-inverted micrograph's score map (a decoy) "
    "away from the picks (BENCHMARKS.md pick5) [not given: the cells-per-pick rule above].",
)
@option("--max-picks", type=click.IntRange(min=1), help="Keep the best N.")
def pick(
    micrographs: tuple[Path, ...],
    out_dir: Path,
    pixel_size: float | None,
    diameter: float,
    min_diameter: float | None,
    max_diameter: float | None,
    shape: str | None,
    ctf_star: Path | None,
    voltage: float,
    cs: float,
    amplitude_contrast: float,
    method: str,
    templates: Path | None,
    template_pixel_size: float | None,
    template_views: int,
    angle_step: float,
    threshold: float | None,
    false_pick_rate: float | None,
    max_picks: int | None,
    device: str,
    threads: int | None,
) -> None:
    """Pick particles on MICROGRAPH... and write OUT/<stem>_autopick.star for each."""
    select_device(device, threads)
    from pipeline.picking.coords import (
        coordinate_path,
        find_ctf,
        read_micrograph_ctfs,
        write_coordinate_index,
        write_coordinates,
    )

    if method == "template" and templates is None:
        raise click.ClickException("--method template needs --templates STACK.mrcs")
    if method != "template" and templates is not None:
        raise click.ClickException("--templates is used by --method template only")
    if method == "template" and shape is not None:
        raise click.ClickException("--shape is used by --method blob only")
    if false_pick_rate is not None and (
        method != "blob" or shape == "round" or threshold is not None
    ):
        raise click.ClickException(
            "--false-pick-rate is used by --method blob with --shape any and no --threshold"
        )
    ctfs = read_micrograph_ctfs(ctf_star, voltage, cs, amplitude_contrast) if ctf_star else None
    template_set = None
    if method == "template":
        from pipeline.picking.template_source import TemplateError, load_templates

        try:
            template_set = load_templates(templates, template_views, template_pixel_size)
        except TemplateError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(
            f"templates: {len(template_set.images)} from {templates} ({template_set.kind})",
            err=True,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    done: list[tuple[str, str, int]] = []

    def work(path: Path) -> None:
        image, px = read_micrograph(path, pixel_size)
        ctf = None
        if ctfs is not None:
            row = find_ctf(ctfs, path)
            if row is None:
                raise click.ClickException(f"{path}: no row in {ctf_star}")
            ctf = row.ctf
        if method == "blob":
            from pipeline.picking.blob import DecoyThreshold, pick_blobs

            decoy = None
            if false_pick_rate is not None:
                decoy = DecoyThreshold(false_pick_rate=false_pick_rate)
            picks = pick_blobs(
                image,
                px,
                diameter,
                min_diameter_A=min_diameter,
                max_diameter_A=max_diameter,
                ctf=ctf,
                threshold_sigma=threshold,
                max_picks=max_picks,
                shape=shape or "any",
                decoy=decoy,
            )
        else:
            from pipeline.picking.template import pick_templates

            picks = pick_templates(
                image,
                px,
                diameter,
                template_set.images,
                template_set.pixel_size_A,
                ctf=ctf,
                angle_step_deg=angle_step,
                threshold_sigma=4.0 if threshold is None else threshold,
                max_picks=max_picks,
            )
        target = write_coordinates(coordinate_path(out_dir, path), picks.coords_px, picks.fom)
        done.append((str(path), str(target), len(picks)))

    try:
        run_each(list(micrographs), work, desc="pick")
    finally:  # the index lists the micrographs that worked, even when some failed
        write_coordinate_index(out_dir / "autopick.star", [(m, c) for m, c, _ in done])
        total = sum(n for _, _, n in done)
        click.echo(f"picked {total} particles on {len(done)} micrographs -> {out_dir}", err=True)
