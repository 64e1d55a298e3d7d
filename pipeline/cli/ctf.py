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

from pipeline.cli import micrograph_inputs, option, read_micrograph, run_each, select_device


@click.command("ctf")
@micrograph_inputs()
@option("--defocus-min", type=float, default=3000.0, help="Å.")
@option("--defocus-max", type=float, default=50000.0, help="Å.")
@option("--min-resolution", type=float, default=30.0, help="Low-resolution limit of the fit, Å.")
@option(
    "--max-resolution", type=float, help="High-resolution limit of the fit, Å [max(4, 2.5 px)]."
)
@option(
    "--tile",
    type=click.IntRange(min=128),
    help="Power-spectrum tile, pixels [automatic: 512, larger where high defocus needs it].",
)
@option("--phase-shift", is_flag=True, help="Also fit a phase-plate phase shift.")
@option("--plots", is_flag=True, help="Write OUT/<stem>_ctf.png per micrograph.")
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
    tile: int | None,
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
        from pipeline.ctf_estimate import estimate_ctf

        data, pixel = read_micrograph(path, pixel_size)
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

    run_each(
        list(micrographs),
        work,
        "ctf",
        finish=lambda rows: _write_table(
            out_dir, rows, pixel_size, voltage, cs, amplitude_contrast
        ),
    )


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
