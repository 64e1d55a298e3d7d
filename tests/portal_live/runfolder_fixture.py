"""A synthetic run folder with known statistics, shaped like the workflow writes it."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

from portal.runs.folder import MOVIE_COLUMNS, SUMMARY_SCHEMA

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def movie_rows(n: int, failed: tuple[int, ...] = ()) -> list[dict]:
    """n movies: motion 1..n Å (cycled), defocus 10000+100 i Å, 100 i particles."""
    rows = []
    for i in range(n):
        ok = i not in failed
        rows.append(
            {
                "movie": f"raw/movie_{i:04d}.tiff",
                "batch": i // 4,
                "status": "ok" if ok else "failed",
                "total_motion_A": f"{1.0 + i % 10:.2f}" if ok else "",
                "early_motion_A": f"{0.5 + 0.1 * i:.2f}" if ok else "",
                "late_motion_A": f"{0.2 + 0.05 * i:.2f}" if ok else "",
                "defocus_u_A": f"{10100 + 100 * i:.1f}" if ok else "",
                "defocus_v_A": f"{9900 + 100 * i:.1f}" if ok else "",
                "defocus_angle_deg": "30.0" if ok else "",
                "astigmatism_A": "200.0" if ok else "",
                "ctf_max_resolution_A": f"{3.0 + 0.1 * i:.2f}" if ok else "",
                "ctf_fom": "0.25" if ok else "",
                "n_particles": str(100 + i) if ok else "",
                "processed_at": (T0 + timedelta(seconds=7 * i)).isoformat(),
            }
        )
    return rows


def write_fsc(path: Path, box: int = 32, pixel_A: float = 1.0, res_A: float = 4.0) -> None:
    """A logistic FSC curve equal to 0.143 exactly at 1/``res_A``."""
    import pandas as pd
    import starfile

    f_cross = 1.0 / res_A
    freqs = [i / (box * pixel_A) for i in range(box // 2 + 1)]
    # logistic with FSC(f_cross) = 0.143
    k = 40.0  # steepness (Å)
    fsc = [1.0 / (1.0 + math.exp(k * (f - f_cross) + math.log(1 / 0.143 - 1))) for f in freqs]
    df = pd.DataFrame(
        {
            "rlnSpectralIndex": list(range(len(freqs))),
            "rlnResolution": freqs,
            "rlnAngstromResolution": [1 / f if f else 999.0 for f in freqs],
            "rlnFourierShellCorrelation": fsc,
        }
    )
    starfile.write({"fsc": df}, path, overwrite=True)


def make_run(
    root: Path,
    n_movies: int = 12,
    failed: tuple[int, ...] = (3,),
    state: str = "running",
    with_outputs: bool = True,
) -> Path:
    """Write summary.json, movies.tsv, thumbnails and (optionally) map/FSC outputs."""
    import mrcfile
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    rows = movie_rows(n_movies, failed)
    with (root / "movies.tsv").open("w", encoding="utf-8") as handle:
        handle.write("\t".join(MOVIE_COLUMNS) + "\n")
        for row in rows:
            handle.write("\t".join(str(row[c]) for c in MOVIE_COLUMNS) + "\n")
    thumbs = root / "thumbnails"
    thumbs.mkdir(exist_ok=True)
    png = _png_bytes()
    for i in (n_movies - 2, n_movies - 1):
        if i not in failed:
            (thumbs / f"movie_{i:04d}_mic.png").write_bytes(png)
            (thumbs / f"movie_{i:04d}_ps.png").write_bytes(png)
    outputs: dict = {k: None for k in ("map", "half1", "half2", "mask", "fsc_star")}
    if with_outputs:
        (root / "refine").mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        for key in ("map", "half1", "half2", "mask"):
            vol = rng.normal(size=(16, 16, 16)).astype(np.float32)
            with mrcfile.new(root / "refine" / f"{key}.mrc", overwrite=True) as mrc:
                mrc.set_data(vol)
                mrc.voxel_size = 1.0
            outputs[key] = f"refine/{key}.mrc"
        write_fsc(root / "refine" / "fsc.star")
        outputs["fsc_star"] = "refine/fsc.star"
        (root / "refine" / "particles.star").write_text("data_particles\n", encoding="utf-8")
        outputs["particles_star"] = "refine/particles.star"
        classes = rng.normal(size=(6, 12, 12)).astype(np.float32)
        (root / "class2d").mkdir(exist_ok=True)
        with mrcfile.new(root / "class2d" / "classes.mrcs", overwrite=True) as mrc:
            mrc.set_data(classes)
        import pandas as pd
        import starfile

        starfile.write(
            {
                "classes": pd.DataFrame(
                    {
                        "rlnClassNumber": [1, 2, 3, 4, 5, 6],
                        "rlnClassParticleCount": [5, 60, 7, 30, 1, 9],
                    }
                )
            },
            root / "class2d" / "classes.star",
            overwrite=True,
        )
        outputs["classes2d"] = "class2d/classes.mrcs"
    processed = n_movies - len(failed)
    summary = {
        "schema": SUMMARY_SCHEMA,
        "updated_at": (T0 + timedelta(minutes=5)).isoformat(),
        "state": state,
        "raw_dir": "/data/raw/session",
        "movies_seen": n_movies,
        "movies_processed": processed,
        "movies_failed": len(failed),
        "particles": sum(100 + i for i in range(n_movies) if i not in failed),
        "batches_done": n_movies // 4,
        "batches_total": (n_movies + 3) // 4,
        "first_movie_at": T0.isoformat(),
        "last_movie_at": (T0 + timedelta(minutes=2)).isoformat(),
        "acquisition_rate_per_h": 500.0,
        "processing_rate_per_h": 520.0,
        "resolution_A": 4.0 if with_outputs else None,
        "b_factor": None,
        "outputs": outputs,
        "per_movie": "movies.tsv",
        "thumbnails": "thumbnails/",
        "log": None,
    }
    tmp = root / "summary.json.tmp"
    tmp.write_text(json.dumps(summary), encoding="utf-8")
    tmp.replace(root / "summary.json")
    return root


def _png_bytes() -> bytes:
    import io

    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1), dpi=32)
    ax = fig.add_subplot()
    ax.imshow(np.arange(64).reshape(8, 8), cmap="gray")
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
