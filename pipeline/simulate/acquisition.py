"""A simulated acquisition session laid out like an EPU session folder.

``RAW_DIR/`` receives, directly inside it (where the workflow looks):

- movies named as EPU names them, ``FoilHole_<hole>_Data_<square>_<n>_<YYYYMMDD>_<HHMMSS>_fractions.tiff``
  (or ``movie_00001.mrcs`` with ``naming="plain"``), each written atomically (a hidden
  temporary name, then rename), with an EPU-like ``.xml`` sidecar of the exposure's metadata;
- ``gain.mrc``: the detector gain reference of the session (multiply raw frames by it);
- ``acquisition.json``: microscope and exposure parameters (pixel size, voltage, Cs, dose,
  frames, seed);
- ``truth/``: the ground truth — ``truth_map.mrc`` (the map at the acquisition pixel size),
  per movie ``<stem>.json`` (drift, local deformation, CTF, particles),
  ``<stem>_shifts.star`` (RELION motion STAR: rlnMicrographShiftX/Y = −drift, pixels),
  ``<stem>_coords.star`` (rlnCoordinateX/Y in frame-1 pixels, poses), and
  ``micrographs_ctf.star`` (true defocus per movie, RELION conventions).

Every movie's random state derives from (seed, movie index), so an acquisition continued with
``start_index`` produces the same movies as one run in one go.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from cryofac.fileio import atomic_path, atomic_write
from pipeline.simulate.movie import (
    DEFAULT_MOTION,
    MovieTruth,
    SpecimenMotion,
    gain_reference,
    readable,
    simulate_movie,
    write_gain,
    write_movie,
)
from pipeline.simulate.particles import DEFAULT_CTFS, CTFDraw
from pipeline.simulate.volume import (
    SimulationError,
    reference_volume,
    require_count,
    require_positive,
    structure_atoms,
)

_START = datetime(2026, 1, 12, 9, 0, 0, tzinfo=UTC)


def acquisition_box(pixel_size_A: float) -> int:
    """Even box (pixels) that holds the whole particle plus 8 Å at ``pixel_size_A``."""
    return 2 * math.ceil((structure_atoms().max_radius_A + 8.0) / pixel_size_A)


def movie_name(index: int, naming: str = "epu", movie_format: str = "tiff") -> str:
    """File name of movie ``index`` (0-based); names sort in acquisition order."""
    if naming == "plain":
        ext = "mrcs" if movie_format == "mrcs" else "tiff"
        return f"movie_{index + 1:05d}.{ext}"
    stamp = _START + timedelta(seconds=35 * index)
    hole = 30000000 + 7 * index
    square = 20000000 + index // 16
    data = 40000000 + index
    ext = "mrc" if movie_format == "mrcs" else "tiff"
    return f"FoilHole_{hole}_Data_{square}_{data}_{stamp:%Y%m%d}_{stamp:%H%M%S}_fractions.{ext}"


def _stem(name: str) -> str:
    for ext in (".mrcs", ".mrc", ".tiff", ".tif"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _write_text(path: Path, text: str) -> None:
    readable(atomic_write(path, text))


def _write_star(path: Path, blocks: dict) -> None:
    import starfile

    with atomic_path(path) as tmp:
        starfile.write(blocks, tmp, overwrite=True, float_format="%.6f")
    readable(path)


def _epu_xml(name: str, truth: MovieTruth, params: dict, stamp: datetime) -> str:
    ctf = truth.micrograph_truth.ctf
    ny, nx = truth.gain.shape
    return f"""<?xml version="1.0" encoding="utf-8"?>
<!-- cryofac simulated exposure (EPU-like metadata; not the full EPU schema) -->
<MicroscopeImage>
  <name>{name}</name>
  <acquisitionDateTime>{stamp.isoformat()}</acquisitionDateTime>
  <pixelSize unit="m">{truth.pixel_size_A * 1e-10:.6e}</pixelSize>
  <accelerationVoltage unit="V">{params["voltage_kV"] * 1000:.0f}</accelerationVoltage>
  <sphericalAberration unit="m">{params["cs_mm"] * 1e-3:.6e}</sphericalAberration>
  <appliedDefocus unit="m">{-0.5 * (ctf.defocus_u_A + ctf.defocus_v_A) * 1e-10:.4e}</appliedDefocus>
  <dosePerFrame unit="e/A2">{truth.dose_per_frame_e_A2:.4f}</dosePerFrame>
  <numberOfFractions>{truth.n_frames}</numberOfFractions>
  <readoutArea width="{nx}" height="{ny}"/>
</MicroscopeImage>
"""


def _movie_truth_files(truth_dir: Path, stem: str, truth: MovieTruth, movie: str) -> None:
    import pandas as pd

    mt = truth.micrograph_truth
    record = truth.to_dict() | {"movie": movie}
    _write_text(truth_dir / f"{stem}.json", json.dumps(record, indent=1))
    frames = np.arange(1, truth.n_frames + 1)
    _write_star(
        truth_dir / f"{stem}_shifts.star",
        {
            "general": pd.DataFrame(
                {
                    "rlnImageSizeX": [truth.gain.shape[1]],
                    "rlnImageSizeY": [truth.gain.shape[0]],
                    "rlnImageSizeZ": [truth.n_frames],
                    "rlnMicrographMovieName": [movie],
                    "rlnMicrographOriginalPixelSize": [truth.pixel_size_A],
                    "rlnMicrographDoseRate": [truth.dose_per_frame_e_A2],
                }
            ),
            "global_shift": pd.DataFrame(
                {
                    "rlnMicrographFrameNumber": frames,
                    "rlnMicrographShiftX": -truth.drift_px[:, 0],
                    "rlnMicrographShiftY": -truth.drift_px[:, 1],
                }
            ),
        },
    )
    _write_star(
        truth_dir / f"{stem}_coords.star",
        {
            "particles": pd.DataFrame(
                {
                    "rlnCoordinateX": mt.coords_px[:, 0],
                    "rlnCoordinateY": mt.coords_px[:, 1],
                    "rlnAngleRot": mt.eulers_deg[:, 0],
                    "rlnAngleTilt": mt.eulers_deg[:, 1],
                    "rlnAnglePsi": mt.eulers_deg[:, 2],
                }
            )
        },
    )


def write_ctf_summary(raw_dir: str | os.PathLike) -> Path:
    """``truth/micrographs_ctf.star`` from every ``truth/*.json`` (one row per movie)."""
    import pandas as pd

    truth_dir = Path(raw_dir) / "truth"
    rows = []
    for path in sorted(truth_dir.glob("*.json")):
        if path.name == "acquisition.json":
            continue
        record = json.loads(path.read_text())
        if "micrograph" not in record:
            continue
        ctf = record["micrograph"]["ctf"]
        rows.append(
            {
                "rlnMicrographName": record["movie"],
                "rlnDefocusU": ctf["defocus_u_A"],
                "rlnDefocusV": ctf["defocus_v_A"],
                "rlnDefocusAngle": ctf["defocus_angle_deg"],
                "rlnVoltage": ctf["voltage_kV"],
                "rlnSphericalAberration": ctf["cs_mm"],
                "rlnAmplitudeContrast": ctf["amplitude_contrast"],
                "rlnAccumMotionTotal": record["accumulated_motion_A"],
                "rlnNumberOfParticles": len(record["micrograph"]["coords_px"]),
            }
        )
    out = truth_dir / "micrographs_ctf.star"
    _write_star(out, {"micrographs": pd.DataFrame(rows)})
    return out


def simulate_acquisition(
    out_dir: str | os.PathLike,
    n_movies: int,
    *,
    movie_shape: tuple[int, int] = (1024, 1024),
    n_frames: int = 20,
    pixel_size_A: float = 0.83,
    dose_per_frame: float = 1.0,
    particles_per_movie: int | None = None,
    ctfs: CTFDraw = DEFAULT_CTFS,
    motion: SpecimenMotion = DEFAULT_MOTION,
    interval_s: float = 0.0,
    start_index: int = 0,
    seed: int | None = None,
    movie_format: str = "tiff",
    naming: str = "epu",
    integer_counts: bool = True,
    progress: bool = True,
) -> list[Path]:
    """Simulate ``n_movies`` movies of apoferritin into ``out_dir`` (see the module doc).

    ``dose_per_frame`` in e/Å²; each movie's CTF drawn by ``ctfs``, its drift from ``motion`` (path length × 0.5–1.5); ``interval_s > 0`` lets movies land one by one at that pace
    (for watchers); ``start_index`` continues an acquisition (same ``seed``); ``seed=None``
    draws one and records it in ``acquisition.json``. ``integer_counts`` (default) records
    integer raw counts as a counting camera does (small zlib TIFFs; raw × gain ≈ counts);
    False writes float raw = counts / gain exactly. Returns the movie paths in order.
    """
    require_count("number of movies", n_movies)
    if int(start_index) != start_index or start_index < 0:
        raise SimulationError(f"start index must be ≥ 0 (got {start_index})")
    require_positive("pixel size", pixel_size_A, "Å")
    require_positive("dose per frame", dose_per_frame, "e/Å²")
    if interval_s < 0:
        raise SimulationError(f"interval must be ≥ 0 s (got {interval_s})")
    if movie_format not in ("tiff", "mrcs"):
        raise SimulationError(f"movie format must be tiff or mrcs (got {movie_format!r})")
    if naming not in ("epu", "plain"):
        raise SimulationError(f"naming must be epu or plain (got {naming!r})")
    ny, nx = (int(v) for v in movie_shape)
    out = Path(out_dir)
    truth_dir = out / "truth"
    try:
        truth_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe", delete=True):
            pass
    except OSError as exc:
        raise SimulationError(
            f"{out}: cannot write to the output folder ({exc.strerror})"
        ) from None
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**32))
    seed = int(seed)
    params = dict(
        pixel_size_A=float(pixel_size_A),
        voltage_kV=float(ctfs.voltage_kV),
        cs_mm=float(ctfs.cs_mm),
        amplitude_contrast=float(ctfs.amplitude_contrast),
        dose_per_frame_e_A2=float(dose_per_frame),
        n_frames=int(n_frames),
        total_dose_e_A2=float(dose_per_frame * n_frames),
        movie_shape=[ny, nx],
        defocus_range_A=list(ctfs.defocus_range_A),
        seed=seed,
        gain="gain.mrc",
        movie_format=movie_format,
        naming=naming,
        integer_counts=bool(integer_counts),
        structure="wwPDB 6Z6U (human apoferritin, 24-mer)",
    )
    box = acquisition_box(pixel_size_A)
    volume = reference_volume(box, pixel_size_A)
    if not (truth_dir / "truth_map.mrc").exists():
        from pipeline.io.mrc import write_mrc

        readable(write_mrc(truth_dir / "truth_map.mrc", volume, pixel_size_A))
    gain = gain_reference((ny, nx), np.random.default_rng([seed, 2**32 - 1]))
    write_gain(out / "gain.mrc", gain, pixel_size_A)
    _write_text(out / "acquisition.json", json.dumps(params, indent=1))

    indices = range(int(start_index), int(start_index) + int(n_movies))
    iterator = indices
    if progress:
        from tqdm import tqdm

        iterator = tqdm(
            indices, desc="movies", unit="movie", disable=not sys.stderr.isatty(), file=sys.stderr
        )
    paths: list[Path] = []
    t0 = time.monotonic()
    for k, index in enumerate(iterator):
        rng = np.random.default_rng([seed, index])
        ctf = ctfs.draw(rng)
        frames, truth = simulate_movie(
            volume,
            (ny, nx),
            pixel_size_A,
            n_frames=n_frames,
            dose_per_frame_e_A2=dose_per_frame,
            motion=replace(motion, drift_total_A=motion.drift_total_A * rng.uniform(0.5, 1.5)),
            ctf=ctf,
            n_particles=particles_per_movie,
            gain=gain,
            rng=rng,
            integer_counts=integer_counts,
        )
        name = movie_name(index, naming, movie_format)
        stem = _stem(name)
        stamp = _START + timedelta(seconds=35 * index)
        _movie_truth_files(truth_dir, stem, truth, name)
        xml_stem = stem[: -len("_fractions")] if stem.endswith("_fractions") else stem
        _write_text(out / f"{xml_stem}.xml", _epu_xml(name, truth, params, stamp))
        paths.append(write_movie(out / name, frames, pixel_size_A))
        if interval_s > 0 and k < len(indices) - 1:
            wait = t0 + (k + 1) * interval_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
    write_ctf_summary(out)
    return paths
