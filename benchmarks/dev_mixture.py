"""Development mixtures for plain ``--diameter`` picking (pick4, issue 21): never held out.

Built like ``bench_picking_mixture.py`` (its held-out mixture of an elongated ~150 Å
complex and the larger ``cap``; which is NOT used here), but from the development
assemblies only (:mod:`pipeline.simulate.assemblies`: ``apoferritin`` and ``rod``, and one
repeat of the rod), with other seeds and defoci, and a user diameter smaller than the
larger particle:

- ``rod1-apo``: one rod repeat (the A dimer, ~80 × 55 Å) and apoferritin (130 Å);
  ``--diameter 90``;
- ``apo-rod``: apoferritin and the three-repeat rod (~220 × 60 Å); ``--diameter 150``.

Six 2048² micrographs at 1.5 Å/px, 40 e/Å², 300 kV, defocus 1.2–2.7 µm, 350 Å ice, 2
contaminants, realistic physics (partial specific volume displaced) or the 1 V envelope
("hard"). The second kind is added as the change it makes to a field with the same ice, as
in ``bench_picking_mixture.mixture``; second-kind particles that would overlap a first-kind
one or a contaminant are cut out.

Run: ``nice python benchmarks/dev_mixture.py [--case rod1-apo|apo-rod] [--seed N]
[--physics realistic|hard] [--extra "ARGS"]`` runs ``cryofac pick --diameter D`` on it and
scores it as the held-out bench does (one-to-one within 0.3 × D).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PIXEL_A = 1.5
SIZE = 2048
DEFOCI_A = (12000.0, 15000.0, 18000.0, 21000.0, 24000.0, 27000.0)


@dataclass(frozen=True)
class Case:
    kinds: tuple[str, str]  # "rod1", "rod", "apoferritin"
    counts: tuple[int, int]
    user_diameter_A: float
    sizes_A: tuple[float, float]  # longest dimension of each kind

    @property
    def names(self) -> tuple[str, str]:
        return self.kinds


CASES = {
    "rod1-apo": Case(("rod1", "apoferritin"), (50, 30), 90.0, (85.0, 130.0)),
    "apo-rod": Case(("apoferritin", "rod"), (40, 25), 150.0, (130.0, 220.0)),
}
BOXES = {"rod1": 80, "apoferritin": 100, "rod": 160}


def volume(kind: str) -> np.ndarray:
    """Map of ``kind`` at PIXEL_A; ``rod1`` is the first repeat of the rod (the A dimer)."""
    from pipeline.simulate.assemblies import _keep_chains, assembly_structure, assembly_volume
    from pipeline.simulate.volume import _potential_on_grid, cached_map

    box = BOXES[kind]
    if kind != "rod1":
        return assembly_volume(kind, box, PIXEL_A)

    def build():
        rod = assembly_structure("rod")
        names = [c.name for c in rod[0] if c.name.endswith("r0")]
        return _potential_on_grid(box, PIXEL_A, structure=_keep_chains(rod, names))

    return cached_map(f"rod1-{box}-{PIXEL_A}", f"dev_rod1_box{box}", box, None, build)


def mass_kDa(kind: str) -> float:
    from pipeline.simulate.assemblies import assembly_mass_kDa

    return assembly_mass_kDa("rod") / 3 if kind == "rod1" else assembly_mass_kDa(kind)


def mixture(case: str, index: int, physics: str = "realistic", seed0: int = 0):
    """(image, truth (n, 2), contaminants (m, 3) [x, y, r], n of the first kind, ctf)."""
    from benchmarks.bench_picking_mixture import combine
    from pipeline.ctf_model import CTFParams
    from pipeline.simulate.micrograph import protein_volume_A3, simulate_micrograph

    spec = CASES[case]
    defocus = DEFOCI_A[index]
    ctf = CTFParams(defocus + 300.0, defocus - 300.0, 70.0 + 17.0 * index)
    common = dict(ctf=ctf, dose_e_A2=40.0, n_contaminants=2, ice_thickness_A=350.0, noise=False)
    seed = 31000 + 10 * index + 100_000 * seed0 + 1000 * list(CASES).index(case)
    realistic = physics == "realistic"
    vol_a, vol_b = (volume(k) for k in spec.kinds)
    ex_a, ex_b = (protein_volume_A3(mass_kDa(k) / 0.93) if realistic else None for k in spec.kinds)
    field_a, truth_a = simulate_micrograph(
        vol_a, (SIZE, SIZE), PIXEL_A, n_particles=spec.counts[0], rng=seed,
        excluded_volume_A3=ex_a, **common,
    )  # fmt: skip
    with_b, truth_b = simulate_micrograph(
        vol_b, (SIZE, SIZE), PIXEL_A, n_particles=spec.counts[1], rng=seed + 1,
        excluded_volume_A3=ex_b, **common,
    )  # fmt: skip
    without, _ = simulate_micrograph(
        vol_b, (SIZE, SIZE), PIXEL_A, n_particles=0, rng=seed + 1, **common
    )
    image, truth, conts = combine(field_a, truth_a, with_b, without, truth_b, ctf, seed)
    return image, truth, conts, len(truth_a.coords_px), ctf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=list(CASES), default="rod1-apo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--extra", default="", help="more `cryofac pick` arguments")
    parser.add_argument("--physics", choices=("hard", "realistic"), default="realistic")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed offset")
    args = parser.parse_args()

    from pipeline.io.mrc import write_mrc
    from pipeline.picking.coords import read_coordinates
    from pipeline.picking.evaluate import match_picks

    spec = CASES[args.case]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pick_devmix_"))
    work.mkdir(parents=True, exist_ok=True)
    truths = {}
    for i in range(len(DEFOCI_A)):
        image, truth, conts, n_a, _ = mixture(args.case, i, args.physics, args.seed)
        path = write_mrc(work / f"{args.case}_{i}.mrc", image, PIXEL_A)
        truths[path] = (truth, conts, n_a)
    d = spec.user_diameter_A
    cmd = ["cryofac", "pick", *map(str, truths), "--out", str(work / "picks")]
    cmd += ["--diameter", f"{d:g}", "--threads", str(args.threads), *args.extra.split()]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    seconds = time.perf_counter() - start
    tol = 0.3 * d / PIXEL_A
    total = np.zeros(3, dtype=int)
    for path, (truth, _conts, n_a) in truths.items():
        coords, _ = read_coordinates(work / "picks" / f"{path.stem}_autopick.star")
        score = match_picks(coords, truth, tol)
        s_a, s_b = match_picks(coords, truth[:n_a], tol), match_picks(coords, truth[n_a:], tol)
        total += (score.n_picks, score.n_true, score.n_matched)
        print(
            f"{path.name}: P {score.precision:.3f} R {score.recall:.3f} F1 {score.f1:.3f} "
            f"({score.n_matched}/{score.n_true}, {score.n_picks} picks; recall "
            f"{spec.kinds[0]} {s_a.recall:.2f}, {spec.kinds[1]} {s_b.recall:.2f})",
            flush=True,
        )
    n_p, n_t, n_m = total
    p, r = n_m / max(n_p, 1), n_m / max(n_t, 1)
    print(
        f"== dev mixture {args.case} ({args.physics}, seed {args.seed}), cryofac pick "
        f"--diameter {d:g} {args.extra}: P {p:.3f} R {r:.3f} "
        f"F1 {2 * p * r / max(p + r, 1e-12):.3f}; {seconds:.1f} s for {len(truths)} "
        f"micrographs (load {load:.1f} at start)",
        flush=True,
    )


if __name__ == "__main__":
    main()
