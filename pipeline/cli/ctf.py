"""``cryofac ctf``: defocus and astigmatism of micrographs (see CONTRACT.md).

Writes ``OUT/micrographs_ctf.star`` (``data_optics`` + ``data_micrographs``: one row per
micrograph that succeeded: ``rlnMicrographName`` as given, ``rlnDefocusU/V`` (Å, U ≥ V),
``rlnDefocusAngle`` (°), ``rlnCtfAstigmatism``, ``rlnCtfMaxResolution`` (Å),
``rlnCtfFigureOfMerit``, and ``rlnPhaseShift`` with ``--phase-shift``), and with
``--plots`` ``OUT/<stem>_ctf.png`` per micrograph.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli import device_options, run_each, select_device


@click.command("ctf")
@click.argument("micrographs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder."
)
@click.option(
    "--pixel-size",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Å per pixel [default: from the MRC header].",
)
@click.option("--voltage", type=float, default=300.0, show_default=True, help="kV.")
@click.option("--cs", type=float, default=2.7, show_default=True, help="Spherical aberration, mm.")
@click.option(
    "--amplitude-contrast", type=click.FloatRange(0, 0.5), default=0.07, show_default=True
)
@click.option("--defocus-min", type=float, default=3000.0, show_default=True, help="Å.")
@click.option("--defocus-max", type=float, default=50000.0, show_default=True, help="Å.")
@click.option(
    "--min-resolution",
    type=float,
    default=30.0,
    show_default=True,
    help="Low-resolution limit of the fit, Å.",
)
@click.option(
    "--max-resolution",
    type=float,
    default=None,
    help="High-resolution limit of the fit, Å [max(4, 2.5 px)].",
)
@click.option(
    "--tile",
    type=click.IntRange(min=128),
    default=512,
    show_default=True,
    help="Power-spectrum tile, pixels.",
)
@click.option("--phase-shift", is_flag=True, help="Also fit a phase-plate phase shift.")
@click.option("--plots", is_flag=True, help="Write OUT/<stem>_ctf.png per micrograph.")
@device_options
def ctf(
    micrographs: tuple[Path, ...],
    out_dir: Path,
    pixel_size: float | None,
    voltage: float,
    cs: float,
    amplitude_contrast: float,
    defocus_min: float,
    defocus_max: float,
    min_resolution: float,
    max_resolution: float | None,
    tile: int,
    phase_shift: bool,
    plots: bool,
    device: str,
    threads: int | None,
) -> None:
    """Estimate defocus U/V, astigmatism angle and fit resolution of each micrograph."""
    if not 0 < defocus_min < defocus_max:
        raise click.BadParameter(
            "need 0 < --defocus-min < --defocus-max", param_hint="--defocus-min"
        )
    select_device(device, threads)
    out_dir.mkdir(parents=True, exist_ok=True)

    def work(path: Path) -> dict:
        from pipeline.ctf_estimate import CTFEstimateError, estimate_ctf
        from pipeline.io.mrc import read_mrc

        data, header_pixel = read_mrc(path)
        if data.ndim == 3 and data.shape[0] == 1:
            data = data[0]
        if data.ndim != 2:
            raise CTFEstimateError(f"{path}: not a single micrograph (shape {data.shape})")
        pixel = pixel_size or header_pixel
        if not pixel or pixel <= 0:
            raise CTFEstimateError(f"{path}: no pixel size in the header; give --pixel-size")
        est = estimate_ctf(
            data.astype("float32"),
            pixel,
            voltage_kV=voltage,
            cs_mm=cs,
            amplitude_contrast=amplitude_contrast,
            defocus_range_A=(defocus_min, defocus_max),
            min_resolution_A=min_resolution,
            max_resolution_A=max_resolution,
            tile=tile,
            phase_shift=phase_shift,
        )
        if plots:
            from pipeline.plots.ctf import plot_ctf

            plot_ctf(
                out_dir / f"{Path(path).stem}_ctf.png",
                est,
            )
        p = est.params
        row = {
            "rlnMicrographName": str(path),
            "rlnOpticsGroup": 1,
            "rlnDefocusU": p.defocus_u_A,
            "rlnDefocusV": p.defocus_v_A,
            "rlnDefocusAngle": p.defocus_angle_deg,
            "rlnCtfAstigmatism": p.defocus_u_A - p.defocus_v_A,
            "rlnCtfMaxResolution": est.max_resolution_A,
            "rlnCtfFigureOfMerit": est.figure_of_merit,
        }
        if phase_shift:
            row["rlnPhaseShift"] = p.phase_shift_deg
        return row

    rows: list[dict] = []

    def record(path: Path) -> dict:
        row = work(path)
        rows.append(row)
        return row

    try:
        run_each(list(micrographs), record, "ctf")
    finally:
        if rows:
            _write_table(out_dir, rows, pixel_size, voltage, cs, amplitude_contrast)


def _write_table(out_dir, rows, pixel_size, voltage, cs, amplitude_contrast) -> None:
    import pandas as pd

    from pipeline.io.star import write_star

    optics = pd.DataFrame(
        {
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnOpticsGroup": [1],
            "rlnMicrographPixelSize": [pixel_size or 0.0],
            "rlnVoltage": [voltage],
            "rlnSphericalAberration": [cs],
            "rlnAmplitudeContrast": [amplitude_contrast],
        }
    )
    write_star(
        out_dir / "micrographs_ctf.star", {"optics": optics, "micrographs": pd.DataFrame(rows)}
    )
