"""Random but valid RELION particle rows for the particle-file tests (STAR and .cs)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def random_particles(
    n: int,
    rng: np.random.Generator,
    *,
    micrographs: list[str],
    size_px: tuple[int, int],
    max_astigmatism_A: float,
    max_angle_deg: float,
) -> pd.DataFrame:
    """``n`` unposed particles spread over ``micrographs`` (stacks under Extract/), with
    coordinates inside ``size_px`` (x, y) and random defocus (V in 0.8–2.5 µm)."""
    dv = rng.uniform(8000, 25000, n)
    stems = [micrographs[i % len(micrographs)].removesuffix(".mrc") for i in range(n)]
    return pd.DataFrame(
        {
            "rlnImageName": [f"{i + 1:06d}@Extract/{stem}.mrcs" for i, stem in enumerate(stems)],
            "rlnMicrographName": [f"{stem}.mrc" for stem in stems],
            "rlnCoordinateX": rng.uniform(0, size_px[0], n),
            "rlnCoordinateY": rng.uniform(0, size_px[1], n),
            "rlnOpticsGroup": np.ones(n, dtype=int),
            "rlnDefocusU": dv + rng.uniform(0, max_astigmatism_A, n),
            "rlnDefocusV": dv,
            "rlnDefocusAngle": rng.uniform(-max_angle_deg, max_angle_deg, n),
        }
    )
