"""``cryofac simulate``: ground-truth maps, particle stacks, micrographs, movies, acquisitions.

Thin click wrappers around :mod:`pipeline.simulate`; heavy imports happen inside the commands
so ``cryofac simulate --help`` stays fast. Bad options are one-line errors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline.cli import POSITIVE, device_options, option, progress, select_device


def _pipeline_default(key: str, fallback: float) -> float:
    """A default from the facility's pipeline configuration (acquisition section)."""
    try:
        from cryofac.config import load_pipeline

        return float(load_pipeline()["acquisition"][key])
    except Exception:  # configuration problems are reported by the commands that need it
        return fallback


def _out_dir(path: Path) -> Path:
    """Create an output folder or fail with one line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(
            f"{path}: cannot create output folder ({exc.strerror})"
        ) from None
    if not path.is_dir():
        raise click.ClickException(f"{path}: not a folder")
    import os

    if not os.access(path, os.W_OK):
        raise click.ClickException(f"{path}: output folder is not writable")
    return path


def _run(function, *args, **kwargs):
    """Call into the simulator; its errors become one-line click errors."""
    from cryofac.errors import CryofacError

    try:
        return function(*args, **kwargs)
    except (CryofacError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise click.ClickException(f"{where}{exc.strerror or exc}") from None


def _seed_option(function):
    return click.option(
        "--seed", type=click.IntRange(min=0), default=None, help="Random seed (reproducible)."
    )(function)


def _set_options(n: int, pixel_size_A: float, defocus_range_A: tuple[float, float]):
    """What the commands that write a set of images share: ``--out`` (a folder), ``-n``,
    ``--pixel-size`` (Å), ``--defocus-range`` (Å), ``--seed`` and the device."""
    decorators = (
        option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True),
        option("-n", "n", type=click.IntRange(min=1), default=n),
        option("--pixel-size", type=POSITIVE, default=pixel_size_A, help="Å/pixel."),
        option(
            "--defocus-range",
            type=(POSITIVE, POSITIVE),
            default=defocus_range_A,
            help="Min, max Å.",
        ),
        _seed_option,
        device_options,
    )

    def add(function):
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return add


@click.group("simulate")
def simulate_group() -> None:
    """Simulate ground-truth data of human apoferritin (wwPDB 6Z6U) for tests and demos."""


@simulate_group.command("volume")
@option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@option("--box", type=click.IntRange(min=8), default=128, help="Pixels.")
@option("--pixel-size", type=POSITIVE, default=1.5, help="Å/pixel.")
@option("--resolution", type=POSITIVE, default=None, help="Low-pass to this many Å.")
def volume_command(out: Path, box: int, pixel_size: float, resolution: float | None) -> None:
    """Write the ground-truth Coulomb potential map (V) as MRC."""
    from pipeline.io.mrc import write_mrc
    from pipeline.simulate import reference_volume

    _out_dir(out.parent if str(out.parent) else Path("."))
    volume = _run(reference_volume, box, pixel_size, resolution_A=resolution)
    _run(write_mrc, out, volume, pixel_size)
    click.echo(f"{out}: {box}³ map at {pixel_size} Å/pixel")


@simulate_group.command("particles")
@_set_options(n=3000, pixel_size_A=1.5, defocus_range_A=(8000.0, 25000.0))
@option("--box", type=click.IntRange(min=16), default=96, help="Pixels.")
@option("--snr", type=POSITIVE, default=0.05, help="Signal/noise var.")
@option("--with-poses", is_flag=True, help="Also put the true poses into particles.star.")
def particles_command(
    out: Path,
    n: int,
    box: int,
    pixel_size: float,
    snr: float,
    defocus_range: tuple[float, float],
    with_poses: bool,
    seed: int | None,
    device: str,
    threads: int | None,
) -> None:
    """Write a particle stack and its RELION 3.1 particles.star (+ particles_truth.star)."""
    select_device(device, threads)
    from pipeline.simulate import (
        CTFDraw,
        reference_volume,
        simulate_particle_stack,
        write_particle_stack,
    )

    _out_dir(out)
    volume = _run(reference_volume, box, pixel_size)
    images, truth = _run(
        simulate_particle_stack,
        volume,
        n,
        pixel_size,
        snr=snr,
        ctfs=CTFDraw(defocus_range_A=defocus_range),
        rng=seed,
    )
    star = _run(write_particle_stack, out, images, truth, with_poses=with_poses)
    click.echo(f"{star}: {n} particles, box {box}, {pixel_size} Å/pixel, SNR {snr}")


@simulate_group.command("micrographs")
@_set_options(n=4, pixel_size_A=1.0, defocus_range_A=(10000.0, 25000.0))
@option("--size", type=click.IntRange(min=64), default=2048, help="Px.")
@option("--particles", type=click.IntRange(min=0), default=100)
@option("--dose", type=POSITIVE, default=40.0, help="e/Å².")
@option("--carbon-edge", is_flag=True, help="Show the edge of the hole (carbon film).")
def micrographs_command(
    out: Path,
    n: int,
    size: int,
    pixel_size: float,
    particles: int,
    dose: float,
    defocus_range: tuple[float, float],
    carbon_edge: bool,
    seed: int | None,
    device: str,
    threads: int | None,
) -> None:
    """Write micrographs (MRC, electron counts) with truth JSON/STAR (coordinates, CTF)."""
    select_device(device, threads)
    import numpy as np
    import pandas as pd

    from pipeline.io.mrc import write_mrc
    from pipeline.simulate import simulate_micrograph
    from pipeline.simulate.acquisition import _write_star, acquisition_box
    from pipeline.simulate.particles import CTFDraw
    from pipeline.simulate.volume import reference_volume

    _out_dir(out / "truth")
    volume = _run(reference_volume, acquisition_box(pixel_size), pixel_size)
    seed_seq = np.random.SeedSequence(seed)
    rows = []
    for i, child in enumerate(progress(seed_seq.spawn(n), total=n, desc="micrographs")):
        rng = np.random.default_rng(child)
        ctf = _run(CTFDraw(defocus_range_A=defocus_range).draw, rng)
        image, truth = _run(
            simulate_micrograph,
            volume,
            (size, size),
            pixel_size,
            n_particles=particles,
            ctf=ctf,
            dose_e_A2=dose,
            carbon_edge=carbon_edge,
            rng=rng,
        )
        name = f"micrograph_{i + 1:04d}.mrc"
        _run(write_mrc, out / name, image, pixel_size)
        stem = name[:-4]
        (out / "truth" / f"{stem}.json").write_text(json.dumps(truth.to_dict(), indent=1))
        coords = pd.DataFrame(
            {
                "rlnCoordinateX": truth.coords_px[:, 0],
                "rlnCoordinateY": truth.coords_px[:, 1],
                "rlnAngleRot": truth.eulers_deg[:, 0],
                "rlnAngleTilt": truth.eulers_deg[:, 1],
                "rlnAnglePsi": truth.eulers_deg[:, 2],
            }
        )
        _write_star(out / "truth" / f"{stem}_coords.star", {"particles": coords})
        rows.append(
            {
                "rlnMicrographName": name,
                "rlnDefocusU": ctf.defocus_u_A,
                "rlnDefocusV": ctf.defocus_v_A,
                "rlnDefocusAngle": ctf.defocus_angle_deg,
            }
        )
    _write_star(out / "truth" / "micrographs_ctf.star", {"micrographs": pd.DataFrame(rows)})
    click.echo(f"{out}: {n} micrographs of {size}² at {pixel_size} Å/pixel, {dose} e/Å²")


@simulate_group.command("acquisition")
@click.argument("raw_dir", type=click.Path(file_okay=False, path_type=Path), required=False)
@option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Session folder to write (the same as giving RAW_DIR).",
)
@option("--movies", type=click.IntRange(min=1), default=12)
@option("--frames", type=click.IntRange(min=1), default=20)
@option("--size", type=click.IntRange(min=64), default=1024, help="Px.")
@option("--pixel-size", type=POSITIVE, help="Å/pixel [pipeline configuration's].")
@option("--dose-per-frame", type=POSITIVE, help="e/Å² per frame [pipeline configuration's].")
@option("--particles", type=click.IntRange(min=0), default=None, help="Per movie.")
@option("--defocus-range", type=(POSITIVE, POSITIVE), default=(10000.0, 25000.0))
@option("--interval", type=click.FloatRange(min=0), default=0.0, help="Seconds between movies.")
@option("--start-index", type=click.IntRange(min=0), default=0, help="First movie, 0-based.")
@option("--format", "movie_format", type=click.Choice(["tiff", "mrcs"]), default="tiff")
@option("--naming", type=click.Choice(["epu", "plain"]), default="epu")
@_seed_option
@device_options
def acquisition_command(
    raw_dir: Path | None,
    out_dir: Path | None,
    movies: int,
    frames: int,
    size: int,
    pixel_size: float | None,
    dose_per_frame: float | None,
    particles: int | None,
    defocus_range: tuple[float, float],
    interval: float,
    start_index: int,
    movie_format: str,
    naming: str,
    seed: int | None,
    device: str,
    threads: int | None,
) -> None:
    """Write an EPU-like session folder: movies, gain.mrc, acquisition.json and truth/."""
    if raw_dir is not None and out_dir is not None and raw_dir != out_dir:
        raise click.UsageError("give the session folder once: RAW_DIR or --out, not both")
    raw_dir = raw_dir or out_dir
    if raw_dir is None:
        raise click.UsageError("missing the session folder: give RAW_DIR or --out DIR")
    select_device(device, threads)
    from pipeline.simulate.acquisition import simulate_acquisition
    from pipeline.simulate.particles import CTFDraw

    _out_dir(raw_dir)
    pixel_size = pixel_size or _pipeline_default("pixel_size_A", 0.83)
    dose_per_frame = dose_per_frame or _pipeline_default("dose_per_frame_e_A2", 1.0)
    paths = _run(
        simulate_acquisition,
        raw_dir,
        movies,
        movie_shape=(size, size),
        n_frames=frames,
        pixel_size_A=pixel_size,
        dose_per_frame=dose_per_frame,
        particles_per_movie=particles,
        ctfs=CTFDraw(
            defocus_range_A=defocus_range,
            voltage_kV=_pipeline_default("voltage_kV", 300.0),
            cs_mm=_pipeline_default("cs_mm", 2.7),
            amplitude_contrast=_pipeline_default("amplitude_contrast", 0.07),
        ),
        interval_s=interval,
        start_index=start_index,
        seed=seed,
        movie_format=movie_format,
        naming=naming,
        progress=sys.stderr.isatty(),
    )
    click.echo(
        f"{raw_dir}: {len(paths)} movies ({frames} frames of {size}², {pixel_size} Å/pixel, "
        f"{dose_per_frame} e/Å² per frame), gain.mrc, truth/"
    )
