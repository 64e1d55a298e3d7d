"""Held-out check of plain ``cryofac pick --diameter 150`` on a mixture (issue 21's bar).

Built like the independent set the issue describes, which is not in this repository: six
2048² micrographs at 1.5 Å/px, 40 e/Å², 300 kV, defocus 1.0–2.5 µm (0.3 µm steps), 400 Å
ice, 2 ice contaminants each, a mixture of an elongated ~150 × 60 Å complex (the first two
repeats of the ``rod`` assembly, ~75 kDa) and the larger asymmetric ``cap`` (~200 Å,
~400 kDa, C1), from the shipped 6Z6U subunits (:mod:`pipeline.simulate.assemblies`).

The simulator places one kind of particle per micrograph, so a mixture is made from
expected intensities (no shot noise): the field with the elongated complex (seed s) plus
the change the caps make to a second field (seed s + 1, with and without caps; same ice
and contaminants, which cancel), minus any cap closer than the two radii to an elongated
particle or inside a contaminant (cut out with its CTF-delocalised surroundings); then
Poisson counts. Nothing of the picker was tuned on this set: it runs
``cryofac pick MICROGRAPHS --out OUT --diameter 150`` (blob picker, no CTF, no range).

``--physics realistic`` makes each particle displace its partial specific volume of ice
instead of the 1 V envelope (1.4–1.5× too big; see
:func:`pipeline.simulate.micrograph.solvent_envelope`); "hard" (default) is the set as
recorded since 2026-12-06.

Run: ``nice python benchmarks/bench_picking_mixture.py [--threads 2] [--workdir DIR]
[--physics hard|realistic] [--seed N] [--extra "ARGS"]``.
Scoring: one-to-one matching within 0.3 × 150 Å (45 Å); picks within a contaminant's
radius are counted separately.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PIXEL_A = 1.5
SIZE = 2048
DEFOCI_A = (10000.0, 13000.0, 16000.0, 19000.0, 22000.0, 25000.0)
N_ELONGATED, N_CAP = 45, 30


def elongated_volume(box: int = 128) -> np.ndarray:
    """Two repeats (r0, r1) of the ``rod`` assembly: ~150 × 60 Å, centre of mass at box//2."""
    from pipeline.simulate.assemblies import _keep_chains, assembly_structure
    from pipeline.simulate.volume import _potential_on_grid, cached_map

    def build():
        rod = assembly_structure("rod")
        names = [c.name for c in rod[0] if c.name.endswith(("r0", "r1"))]
        return _potential_on_grid(box, PIXEL_A, structure=_keep_chains(rod, names))

    return cached_map(f"rod2-{box}-{PIXEL_A}", f"bench_rod2_box{box}", box, None, build)


def rod_kDa() -> float:
    """Mass (kDa, no hydrogens) of the three-repeat rod; the elongated complex is 2/3 of it."""
    from pipeline.simulate.assemblies import assembly_mass_kDa

    return assembly_mass_kDa("rod")


def combine(field_a, truth_a, with_b, without_b, truth_b, ctf, seed: int):
    """The mixture's micrograph from expected intensities: ``field_a`` (first kind) plus
    the change the second kind makes (``with_b`` − ``without_b``, same ice and
    contaminants), minus any second-kind particle closer than the two radii to a
    first-kind one or inside a contaminant (cut out with its CTF-delocalised
    surroundings); then Poisson counts (``seed`` + 2). Returns the image, the true
    centres (first kind first) and the contaminants (x, y, radius in pixels)."""
    from pipeline.simulate.micrograph import delocalisation_px

    delta = with_b.astype(np.float64) - without_b
    r_a = 0.5 * truth_a.particle_diameter_A / PIXEL_A
    r_b = 0.5 * truth_b.particle_diameter_A / PIXEL_A
    conts = np.column_stack([truth_a.contaminant_coords_px, truth_a.contaminant_radii_px])
    yy, xx = np.mgrid[:SIZE, :SIZE]
    keep = []
    cut = r_b + delocalisation_px(ctf, PIXEL_A) + 4
    for x, y in truth_b.coords_px:
        clash = np.any(np.hypot(*(truth_a.coords_px - (x, y)).T) < r_a + r_b)
        clash |= np.any(np.hypot(conts[:, 0] - x, conts[:, 1] - y) < conts[:, 2] + r_b)
        if clash:
            delta[(xx - x) ** 2 + (yy - y) ** 2 < cut**2] = 0.0
        else:
            keep.append((x, y))
    expected = np.clip(field_a + delta, 0.0, None)
    image = np.random.default_rng(seed + 2).poisson(expected).astype(np.float32)
    truth = np.vstack([truth_a.coords_px, np.asarray(keep).reshape(-1, 2)])
    return image, truth, conts


def mixture(index: int, physics: str = "hard", seed0: int = 0):
    """(image, truth coords (n, 2), contaminants (m, 3) [x, y, r]) for micrograph ``index``."""
    from pipeline.ctf_model import CTFParams
    from pipeline.simulate.assemblies import assembly_mass_kDa, assembly_volume
    from pipeline.simulate.micrograph import protein_volume_A3, simulate_micrograph

    defocus = DEFOCI_A[index]
    ctf = CTFParams(defocus + 250.0, defocus - 250.0, 20.0 + 25.0 * index)
    common = dict(ctf=ctf, dose_e_A2=40.0, n_contaminants=2, ice_thickness_A=400.0, noise=False)
    seed = 7000 + 10 * index + 100_000 * seed0
    realistic = physics == "realistic"
    field_a, truth_a = simulate_micrograph(
        elongated_volume(),
        (SIZE, SIZE),
        PIXEL_A,
        n_particles=N_ELONGATED,
        rng=seed,
        excluded_volume_A3=protein_volume_A3(2 / 3 * rod_kDa() / 0.93) if realistic else None,
        **common,
    )
    cap = assembly_volume("cap", 150, PIXEL_A)
    cap_volume = protein_volume_A3(assembly_mass_kDa("cap") / 0.93) if realistic else None
    with_caps, truth_b = simulate_micrograph(
        cap,
        (SIZE, SIZE),
        PIXEL_A,
        n_particles=N_CAP,
        rng=seed + 1,
        excluded_volume_A3=cap_volume,
        **common,
    )
    without, _ = simulate_micrograph(
        cap, (SIZE, SIZE), PIXEL_A, n_particles=0, rng=seed + 1, **common
    )
    image, truth, conts = combine(field_a, truth_a, with_caps, without, truth_b, ctf, seed)
    return image, truth, conts, len(truth_a.coords_px), ctf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--extra", default="", help="more `cryofac pick` arguments")
    parser.add_argument("--physics", choices=("hard", "realistic"), default="hard")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed offset")
    args = parser.parse_args()

    from pipeline.io.mrc import write_mrc
    from pipeline.picking.coords import read_coordinates
    from pipeline.picking.evaluate import match_picks

    work = args.workdir or Path(tempfile.mkdtemp(prefix="pick_mixture_"))
    work.mkdir(parents=True, exist_ok=True)
    truths = {}
    for i in range(len(DEFOCI_A)):
        image, truth, conts, n_a, _ = mixture(i, args.physics, args.seed)
        path = write_mrc(work / f"mix_{i}.mrc", image, PIXEL_A)
        truths[path] = (truth, conts, n_a)
    cmd = ["cryofac", "pick", *map(str, truths), "--out", str(work / "picks")]
    cmd += ["--diameter", "150", "--threads", str(args.threads), *args.extra.split()]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    seconds = time.perf_counter() - start
    tol = 0.3 * 150.0 / PIXEL_A
    total = np.zeros(4, dtype=int)
    for path, (truth, conts, n_a) in truths.items():
        coords, _ = read_coordinates(work / "picks" / f"{path.stem}_autopick.star")
        score = match_picks(coords, truth, tol)
        s_a = match_picks(coords, truth[:n_a], tol)
        s_b = match_picks(coords, truth[n_a:], tol)
        on_cont = sum(
            bool(np.any(np.hypot(conts[:, 0] - x, conts[:, 1] - y) < conts[:, 2]))
            for x, y in coords
        )
        total += (score.n_picks, score.n_true, score.n_matched, on_cont)
        print(
            f"{path.name}: P {score.precision:.3f} R {score.recall:.3f} F1 {score.f1:.3f} "
            f"({score.n_matched}/{score.n_true}, {score.n_picks} picks; recall elongated "
            f"{s_a.recall:.2f}, cap {s_b.recall:.2f}; {on_cont} on contaminants)",
            flush=True,
        )
    n_p, n_t, n_m, n_c = total
    p, r = n_m / max(n_p, 1), n_m / max(n_t, 1)
    print(
        f"== mixture ({args.physics}, seed {args.seed}), cryofac pick --diameter 150 "
        f"{args.extra}: P {p:.3f} R {r:.3f} "
        f"F1 {2 * p * r / max(p + r, 1e-12):.3f}; {n_c} picks on contaminants; "
        f"{seconds:.1f} s for {len(truths)} micrographs (load {load:.1f} at start)",
        flush=True,
    )


if __name__ == "__main__":
    main()
