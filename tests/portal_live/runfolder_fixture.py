"""A synthetic run folder with known statistics, shaped like the workflow writes it."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryofac.run_folder import MOVIE_COLUMNS, SUMMARY_SCHEMA

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _row(i: int, movie: str, batch: str, measured: dict[str, str] | None) -> dict:
    """One row of movies.tsv; a failed movie (``measured`` None) has its measured columns
    empty and a reason."""
    row = dict.fromkeys(MOVIE_COLUMNS, "")
    row.update(measured or {})
    row.update(
        movie=movie,
        batch=batch,
        status="ok" if measured else "failed",
        processed_at=(T0 + timedelta(seconds=7 * i)).isoformat(),
        reason="" if measured else "motioncorr: not an MRC or TIFF movie",
    )
    return row


def realistic_rows(n: int, seed: int = 0, failed_every: int = 37) -> list[dict]:
    """n movies with plausible random statistics (for screenshots and browser tests)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ok = failed_every == 0 or i % failed_every != failed_every - 1
        total = float(rng.gamma(4.0, 0.6))
        defocus = float(rng.uniform(8000, 22000))
        astig = float(abs(rng.normal(0, 250)))
        measured = (
            {
                "total_motion_A": f"{total:.2f}",
                "early_motion_A": f"{0.6 * total:.2f}",
                "late_motion_A": f"{0.4 * total:.2f}",
                "defocus_u_A": f"{defocus + astig / 2:.1f}",
                "defocus_v_A": f"{defocus - astig / 2:.1f}",
                "defocus_angle_deg": f"{rng.uniform(0, 180):.1f}",
                "astigmatism_A": f"{astig:.1f}",
                "ctf_max_resolution_A": f"{2.8 + rng.gamma(2.0, 0.6):.2f}",
                "ctf_fom": f"{rng.uniform(0.1, 0.35):.3f}",
                "n_particles": str(int(rng.poisson(160))),
            }
            if ok
            else None
        )
        rows.append(_row(i, f"raw/FoilHole_{1000 + i}_Data.tiff", f"b{i // 8:05d}", measured))
    return rows


def movie_rows(n: int, failed: tuple[int, ...] = ()) -> list[dict]:
    """n movies: motion 1..n Å (cycled), defocus 10000+100 i Å, 100 i particles."""
    rows = []
    for i in range(n):
        ok = i not in failed
        measured = (
            {
                "total_motion_A": f"{1.0 + i % 10:.2f}",
                "early_motion_A": f"{0.5 + 0.1 * i:.2f}",
                "late_motion_A": f"{0.2 + 0.05 * i:.2f}",
                "defocus_u_A": f"{10100 + 100 * i:.1f}",
                "defocus_v_A": f"{9900 + 100 * i:.1f}",
                "defocus_angle_deg": "30.0",
                "astigmatism_A": "200.0",
                "ctf_max_resolution_A": f"{3.0 + 0.1 * i:.2f}",
                "ctf_fom": "0.25",
                "n_particles": str(100 + i),
            }
            if ok
            else None
        )
        rows.append(_row(i, f"raw/movie_{i:04d}.tiff", f"b{i // 4:05d}", measured))
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
    realistic: bool = False,
) -> Path:
    """Write summary.json, movies.tsv, thumbnails and (optionally) map/FSC outputs."""
    import mrcfile
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    rows = realistic_rows(n_movies) if realistic else movie_rows(n_movies, failed)
    if realistic:
        failed = tuple(i for i, r in enumerate(rows) if r["status"] == "failed")
    with (root / "movies.tsv").open("w", encoding="utf-8") as handle:
        handle.write("\t".join(MOVIE_COLUMNS) + "\n")
        for row in rows:
            handle.write("\t".join(str(row[c]) for c in MOVIE_COLUMNS) + "\n")
    thumbs = root / "thumbnails"
    thumbs.mkdir(exist_ok=True)
    for i in (n_movies - 2, n_movies - 1):
        if i not in failed and i >= 0:
            stem = Path(rows[i]["movie"]).stem
            (thumbs / f"{stem}_mic.png").write_bytes(_png_bytes("mic" if realistic else "tiny"))
            (thumbs / f"{stem}_ps.png").write_bytes(_png_bytes("ps" if realistic else "tiny"))
    outputs: dict = {k: None for k in ("map", "half1", "half2", "mask", "fsc_star")}
    if with_outputs:
        (root / "refine").mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        box = 48 if realistic else 16
        for key in ("map", "half1", "half2", "mask"):
            if realistic:
                vol = _blob_volume(rng, box, mask=key == "mask")
            else:
                vol = rng.normal(size=(box, box, box)).astype(np.float32)
            with mrcfile.new(root / "refine" / f"{key}.mrc", overwrite=True) as mrc:
                mrc.set_data(vol)
                mrc.voxel_size = 1.0
            outputs[key] = f"refine/{key}.mrc"
        write_fsc(root / "refine" / "fsc.star")
        outputs["fsc_star"] = "refine/fsc.star"
        (root / "refine" / "particles.star").write_text("data_particles\n", encoding="utf-8")
        outputs["particles_star"] = "refine/particles.star"
        classes = _class_images(rng, 6 if not realistic else 24, 12 if not realistic else 48)
        (root / "class2d").mkdir(exist_ok=True)
        with mrcfile.new(root / "class2d" / "classes.mrcs", overwrite=True) as mrc:
            mrc.set_data(classes)
        import pandas as pd
        import starfile

        starfile.write(
            {
                "classes": pd.DataFrame(
                    {
                        "rlnClassNumber": list(range(1, len(classes) + 1)),
                        "rlnClassParticleCount": (
                            [int(c) for c in rng.integers(50, 4000, len(classes))]
                            if realistic
                            else [5, 60, 7, 30, 1, 9]
                        ),
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
        "updated_at": datetime.now(UTC).isoformat(),
        "state": state,
        "raw_dir": "/data/raw/session",
        "movies_seen": n_movies,
        "movies_processed": processed,
        "movies_failed": len(failed),
        "particles": sum(int(r["n_particles"] or 0) for r in rows),
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


def _blob_volume(rng, box: int, mask: bool = False):
    """A few overlapping Gaussian 'domains' (a protein-like density), or a soft mask."""
    import numpy as np

    z, y, x = np.mgrid[:box, :box, :box] - box / 2
    if mask:
        return (1.0 / (1.0 + np.exp((np.sqrt(x**2 + y**2 + z**2) - 0.35 * box) / 1.5))).astype(
            np.float32
        )
    vol = np.zeros((box, box, box))
    for _ in range(7):
        c = rng.normal(0, 0.12 * box, 3)
        vol += np.exp(-((x - c[2]) ** 2 + (y - c[1]) ** 2 + (z - c[0]) ** 2) / (0.01 * box**2))
    return (vol + 0.02 * rng.normal(size=vol.shape)).astype(np.float32)


def _class_images(rng, n: int, box: int):
    """Blob-like class averages: a soft disc with a random off-centre lobe, plus noise."""
    import numpy as np

    y, x = np.mgrid[:box, :box] - box / 2
    images = []
    for _ in range(n):
        angle = rng.uniform(0, 2 * np.pi)
        lobe = np.exp(
            -((x - 0.2 * box * np.cos(angle)) ** 2 + (y - 0.2 * box * np.sin(angle)) ** 2)
            / (0.01 * box**2)
        )
        disc = np.exp(-(x**2 + y**2) / (0.03 * box**2))
        images.append(disc + 0.7 * lobe + 0.15 * rng.normal(size=(box, box)))
    return np.array(images, dtype=np.float32)


def _png_bytes(kind: str = "tiny") -> bytes:
    """A PNG thumbnail: tiny test pattern, or a noisy micrograph / Thon-ring power spectrum."""
    import io

    import numpy as np
    from matplotlib.figure import Figure

    if kind == "tiny":
        image, size, dpi = np.arange(64).reshape(8, 8), 1, 32
    else:
        rng = np.random.default_rng(1)
        n = 256
        y, x = np.mgrid[:n, :n] - n / 2
        if kind == "ps":
            k2 = (x**2 + 0.9 * y**2) / n**2
            image = np.sin(40 * np.pi * k2) ** 2 * np.exp(-5 * np.sqrt(k2))
            image += 0.15 * rng.random((n, n)) * np.exp(-3 * np.sqrt(k2))
        else:
            image = rng.normal(size=(n, n))
            for _ in range(60):
                cx, cy = rng.uniform(-n / 2, n / 2, 2)
                image -= 1.5 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 40.0)
        size, dpi = 2.56, 100
    fig = Figure(figsize=(size, size), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image, cmap="gray")
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
