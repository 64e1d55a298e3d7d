"""``cryofac motioncorr``: motion correction with dose weighting (see CONTRACT.md).

Writes per movie ``OUT/<stem>.mrc`` (dose-weighted aligned sum), ``OUT/<stem>_noDW.mrc``,
``OUT/<stem>_shifts.star`` (RELION global shifts: minus the specimen drift, pixels,
frame 1 = 0), optionally ``OUT/<stem>_drift.png``; and ``OUT/corrected_micrographs.star``
listing every movie that succeeded with its accumulated motion (Å).
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from pipeline.cli import PATH, POSITIVE, device_options, option, out_option, run_each, select_device


def parse_patches(text: str) -> tuple[int, int] | None:
    """``"5x5"`` → (5, 5) (columns × rows); ``"1x1"`` or ``"0"`` → None (global only)."""
    if text.strip() in ("0", "none", "1", "1x1"):
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not COLUMNSxROWS (e.g. 5x5)", param_hint="--patches")
    cols, rows = int(match.group(1)), int(match.group(2))
    if cols < 1 or rows < 1 or cols > 20 or rows > 20:
        raise click.BadParameter("patch counts must be between 1 and 20", param_hint="--patches")
    return None if cols == rows == 1 else (cols, rows)


def movie_stem(path: Path) -> str:
    name = path.name
    for suffix in (".mrcs", ".mrc", ".tiff", ".tif", ".eer", ".st"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


@click.command("motioncorr")
@click.argument("movies", nargs=-1, required=True, type=PATH)
@out_option()
@option("--pixel-size", type=POSITIVE, required=True, help="Å per pixel.")
@option("--dose-per-frame", type=POSITIVE, required=True, help="Exposure per frame, e/Å².")
@option("--voltage", type=float, default=300.0, help="kV.")
@option("--gain", type=PATH, help="Gain reference (MRC/TIFF), multiplied into each frame.")
@option("--defects", type=PATH, help="Defect map (non-zero = bad pixel).")
@option("--patches", default="5x5", help="Local-motion patches COLUMNSxROWS; 1x1 = global only.")
@option("--pre-exposure", type=float, default=0.0, help="e/Å² before frame 1.")
@option("--bfactor", type=float, default=150.0, help="B-factor (Å²) on the global correlation.")
@option("--tolerance", type=POSITIVE, default=0.01, help="Global stop: shift change, px RMS.")
@option(
    "--max-iterations", type=click.IntRange(min=1), default=15, help="Most global alignment rounds."
)
@option("--plots", is_flag=True, help="Write OUT/<stem>_drift.png per movie.")
@device_options
def motioncorr(
    movies: tuple[Path, ...],
    out_dir: Path,
    pixel_size: float,
    dose_per_frame: float,
    voltage: float,
    gain: Path | None,
    defects: Path | None,
    patches: str,
    pre_exposure: float,
    bfactor: float,
    tolerance: float,
    max_iterations: int,
    plots: bool,
    device: str,
    threads: int | None,
) -> None:
    """Align movie frames (global + local), dose-weight and sum them."""
    patch_grid = parse_patches(patches)
    select_device(device, threads)
    if gain is not None and not gain.exists():
        raise click.ClickException(f"{gain}: gain reference not found")
    out_dir.mkdir(parents=True, exist_ok=True)

    def work(path: Path) -> dict:
        from pipeline.io.movie import Movie
        from pipeline.io.mrc import write_mrc
        from pipeline.io.star import write_shifts
        from pipeline.motion.correct import MotionOptions, correct_movie

        stem = movie_stem(path)
        with Movie(path, gain=gain, defects=defects) as movie:
            result = correct_movie(
                movie,
                pixel_size,
                dose_per_frame,
                MotionOptions(
                    patches=patch_grid,
                    bfactor_global_A2=bfactor,
                    tolerance_px=tolerance,
                    max_iterations=max_iterations,
                ),
                voltage_kV=voltage,
                pre_exposure_e_A2=pre_exposure,
            )
            n, (ny, nx) = movie.n_frames, movie.shape
        out = out_dir / f"{stem}.mrc"
        write_mrc(out_dir / f"{stem}_noDW.mrc", result.sum_nodw, pixel_size)
        write_shifts(
            out_dir / f"{stem}_shifts.star",
            result.drift_px,
            {
                "rlnImageSizeX": nx,
                "rlnImageSizeY": ny,
                "rlnImageSizeZ": n,
                "rlnMicrographMovieName": str(path),
                "rlnMicrographBinning": 1.0,
                "rlnMicrographOriginalPixelSize": pixel_size,
                "rlnMicrographDoseRate": dose_per_frame,
                "rlnMicrographPreExposure": pre_exposure,
                "rlnVoltage": voltage,
                "rlnMicrographStartFrame": 1,
                "rlnMotionModelVersion": 0,
                **({"rlnMicrographGainName": str(gain)} if gain else {}),
            },
        )
        if plots:
            from pipeline.plots.motion import plot_drift

            plot_drift(
                out_dir / f"{stem}_drift.png",
                result.drift_px,
                pixel_size,
                title=f"{stem}: {result.accum_motion_total_A:.1f} Å total",
                local_model=result.local_model,
            )
        write_mrc(out, result.sum_dw, pixel_size)  # last: its presence marks success
        return {
            "rlnMicrographName": str(out),
            "rlnMicrographMetadata": str(out_dir / f"{stem}_shifts.star"),
            "rlnOpticsGroup": 1,
            "rlnAccumMotionTotal": result.accum_motion_total_A,
            "rlnAccumMotionEarly": result.accum_motion_early_A,
            "rlnAccumMotionLate": result.accum_motion_late_A,
        }

    run_each(
        list(movies),
        work,
        "motioncorr",
        finish=lambda rows: _write_table(out_dir, rows, pixel_size, voltage),
    )


def _write_table(out_dir: Path, rows: list[dict], pixel_size: float, voltage: float) -> None:
    import pandas as pd

    from pipeline.io.star import write_star

    optics = pd.DataFrame(
        {
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnOpticsGroup": [1],
            "rlnMicrographOriginalPixelSize": [pixel_size],
            "rlnVoltage": [voltage],
            "rlnMicrographPixelSize": [pixel_size],
        }
    )
    write_star(
        out_dir / "corrected_micrographs.star",
        {"optics": optics, "micrographs": pd.DataFrame(rows)},
    )
