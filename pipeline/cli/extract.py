"""``cryofac extract``: particle stacks, a RELION 3.1 particles STAR and a cryoSPARC .cs.

For every micrograph in the CTF STAR that has ``COORDS/<stem>_autopick.star``, writes
``OUT/Particles/<stem>.mrcs``; then ``OUT/particles.star`` (``data_optics`` +
``data_particles``, image names relative to OUT, CTF copied per particle) and
``OUT/particles.cs``. Boxes that do not fit inside the micrograph are skipped.

``--paths-relative-to DIR`` writes every path (``rlnImageName``'s stack,
``rlnMicrographName``, the ``.cs`` ``blob/path`` and ``location/micrograph_path``)
relative to DIR instead, as RELION does with its project folder (the workflow passes
its run folder, ``.``); paths outside DIR are written absolute.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli import (
    PATH,
    device_options,
    optics_options,
    option,
    out_option,
    run_each,
    select_device,
)


@click.command("extract")
@option(
    "--micrographs",
    "micrographs_star",
    required=True,
    type=PATH,
    help="micrographs_ctf.star (rlnMicrographName + CTF) from `cryofac ctf`.",
)
@option("--coords", "coords_dir", required=True, type=PATH, help="<stem>_autopick.star folder.")
@out_option()
@option("--box", "box_px", required=True, type=click.IntRange(min=8), help="Box, px.")
@option("--bin", "bin_factor", type=click.FloatRange(min=1.0), default=1.0)
@option("--pixel-size", type=float, help="Micrograph Å/px [header].")
@option("--diameter", type=float, help="Particle Å: background mask = 1.1× it [0.75× box].")
@optics_options(voltage_help="kV (if no optics table).")
@option("--invert/--no-invert", default=True, help="Make protein white.")
@option(
    "--paths-relative-to",
    "paths_root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write paths relative to this folder (RELION's project folder) [OUT].",
)
@device_options
def extract(
    micrographs_star: Path,
    coords_dir: Path,
    out_dir: Path,
    box_px: int,
    bin_factor: float,
    pixel_size: float | None,
    diameter: float | None,
    voltage: float,
    cs: float,
    amplitude_contrast: float,
    invert: bool,
    paths_root: Path | None,
    device: str,
    threads: int | None,
) -> None:
    """Extract particles of the micrographs in --micrographs at the picks in --coords."""
    if box_px % 2:
        raise click.ClickException(f"--box must be even (got {box_px})")
    select_device(device, threads)
    import numpy as np
    import pandas as pd

    from pipeline.extraction import binned_box, extract_particles
    from pipeline.io.cs import write_cs
    from pipeline.io.mrc import read_mrc, write_mrc
    from pipeline.io.particles import ParticleTable, make_optics, write_particles_star
    from pipeline.io.paths import relative_to_root
    from pipeline.picking.coords import coordinate_path, read_coordinates, read_micrograph_ctfs

    ctfs = read_micrograph_ctfs(micrographs_star, voltage, cs, amplitude_contrast)
    if not ctfs:
        raise click.ClickException(f"{micrographs_star}: no micrographs listed")
    (out_dir / "Particles").mkdir(parents=True, exist_ok=True)
    rows: list[pd.DataFrame] = []
    shapes: dict[str, tuple[int, int]] = {}
    pixel_sizes: list[float] = []

    def resolve(name: str) -> Path:
        path = Path(name)
        if not path.is_absolute() and not path.exists():
            candidate = micrographs_star.parent / path
            if candidate.exists():
                return candidate
        return path

    def work(name: str) -> None:
        row = ctfs[name]
        coords_path = coordinate_path(coords_dir, name)
        coords, fom = read_coordinates(coords_path)
        image, header_px = read_mrc(resolve(name))
        if image.ndim == 3 and image.shape[0] == 1:
            image = image[0]
        px = pixel_size or header_px
        if not px or px <= 0:
            raise click.ClickException(f"{name}: no pixel size in the header; use --pixel-size")
        new_box = binned_box(box_px, bin_factor)
        mask_px = 1.1 * diameter / (px * box_px / new_box) if diameter else None
        result = extract_particles(
            image,
            coords,
            box_px,
            px,
            bin_factor=bin_factor,
            mask_diameter_px=mask_px,
            invert=invert,
        )
        stack_rel = f"Particles/{Path(name).stem}.mrcs"
        if len(result.kept):
            write_mrc(out_dir / stack_rel, result.images, result.pixel_size_A, stack=True)
        micrograph = name
        if paths_root is not None:
            stack_rel = relative_to_root(out_dir / stack_rel, paths_root)
            micrograph = relative_to_root(resolve(name), paths_root)
        pixel_sizes.append(px)
        shapes[micrograph] = (int(image.shape[0]), int(image.shape[1]))
        ctf = row.ctf
        n = len(result.kept)
        frame = pd.DataFrame(
            {
                "rlnImageName": [f"{i + 1:06d}@{stack_rel}" for i in range(n)],
                "rlnMicrographName": [micrograph] * n,
                "rlnCoordinateX": coords[result.kept, 0],
                "rlnCoordinateY": coords[result.kept, 1],
                "rlnAutopickFigureOfMerit": fom[result.kept],
                "rlnOpticsGroup": np.ones(n, dtype=int),
                "rlnDefocusU": [ctf.defocus_u_A] * n,
                "rlnDefocusV": [ctf.defocus_v_A] * n,
                "rlnDefocusAngle": [ctf.defocus_angle_deg] * n,
                "rlnPhaseShift": [ctf.phase_shift_deg] * n,
                "rlnCtfBfactor": [0.0] * n,
                "rlnCtfMaxResolution": [row.max_resolution_A or 0.0] * n,
                "rlnCtfFigureOfMerit": [row.figure_of_merit or 0.0] * n,
            }
        )
        rows.append(frame)
        skipped = len(coords) - n
        if skipped:
            click.echo(f"{name}: skipped {skipped} picks whose box leaves the micrograph", err=True)

    names = list(ctfs)
    failure: click.ClickException | None = None
    try:
        run_each(names, work, desc="extract")
    except click.ClickException as exc:  # some inputs failed: still write the rest
        failure = exc
    if rows:
        if len(set(np.round(pixel_sizes, 4))) > 1:
            raise click.ClickException("micrographs have different pixel sizes; extract them apart")
        new_box = binned_box(box_px, bin_factor)
        first = next(iter(ctfs.values())).ctf
        optics = make_optics(
            pixel_sizes[0] * box_px / new_box,
            new_box,
            first.voltage_kV,
            first.cs_mm,
            first.amplitude_contrast,
            micrograph_pixel_size_A=pixel_sizes[0],
        )
        table = ParticleTable(optics, pd.concat(rows, ignore_index=True))
        write_particles_star(out_dir / "particles.star", table)
        write_cs(out_dir / "particles.cs", table, micrograph_shapes=shapes)
        click.echo(f"extracted {len(table)} particles -> {out_dir / 'particles.star'}", err=True)
    if failure is not None:
        raise failure
