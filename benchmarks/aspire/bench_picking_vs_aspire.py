"""Picking side by side: cryofac's blob picker vs ASPIRE's APPLE on the same micrographs.

    python benchmarks/aspire/bench_picking_vs_aspire.py --size 4096 --n-micrographs 2 \
        --threads 2 [--control] [--aspire-python .venv-aspire/bin/python]

1. Simulates ``--n-micrographs`` micrographs (``pipeline.simulate.simulate_micrograph``,
   apoferritin 132 Å at 1 Å/pixel, 40 e/Å², defocus spread over 1.0–2.5 µm, ~100 particles
   per 2048², 3 contaminants), seeded, and writes them to ``--workdir`` as MRC plus a truth
   JSON (``[x, y]`` centres in pixels). ``--control`` adds one micrograph without
   contaminants.
2. Ours: reads each MRC and runs ``pipeline.picking.blob.pick_blobs`` (given the CTF, as in
   the pipeline after CTF estimation) with ``--threads`` FFT workers; wall and CPU seconds.
3. ASPIRE: ``run_aspire_apple.py`` in ASPIRE's own venv (subprocess) on the same files; wall
   and CPU seconds of the whole child (import included) and APPLE's own per-micrograph time.
4. Both scored the same way: one-to-one matching within 0.3 × diameter
   (``pipeline.picking.evaluate.match_picks``): precision, recall, F1.

Writes ``benchmarks/results/aspire_picking.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import DEFAULT_ASPIRE_PYTHON, ROOT, machine_line, run_child, thread_env  # noqa: E402

DIAMETER_A = 132.0  # apoferritin outer diameter used by the simulator's truth
PIXEL_A = 1.0


def simulate(size_px: int, seed: int, defocus_A: float, contaminants: int):
    """One simulated micrograph (counts) and its truth; ~100 particles per 2048²."""
    from pipeline.ctf_model import CTFParams
    from pipeline.simulate import reference_volume, simulate_micrograph

    volume = reference_volume(160, PIXEL_A)
    n = int(100 * size_px * size_px / 2048**2)
    ctf = CTFParams(defocus_A + 250.0, defocus_A - 250.0, 40.0)
    return simulate_micrograph(
        volume,
        (size_px, size_px),
        PIXEL_A,
        n_particles=n,
        ctf=ctf,
        dose_e_A2=40.0,
        n_contaminants=contaminants,
        rng=seed,
    )


def write_inputs(work: Path, size_px: int, n: int, control: bool) -> list[dict]:
    """Simulate and write the micrographs (MRC without pixel size: APPLE 0.14 rejects one)."""
    import mrcfile

    work.mkdir(parents=True, exist_ok=True)
    cases = [(f"mic_{i}", 100 + i, d, 3) for i, d in enumerate(np.linspace(1e4, 2.5e4, n))]
    if control:
        cases.append(("mic_clean", 200, 1.75e4, 0))
    rows = []
    for name, seed, defocus, contaminants in cases:
        image, truth = simulate(size_px, seed, float(defocus), contaminants)
        path = work / f"{name}.mrc"
        with mrcfile.new(path, overwrite=True) as handle:
            handle.set_data(np.asarray(image, dtype=np.float32))
        row = {
            "name": name,
            "path": str(path),
            "seed": seed,
            "defocus_A": float(defocus),
            "contaminants": contaminants,
            "diameter_A": float(truth.particle_diameter_A),
            "coords_xy_px": np.asarray(truth.coords_px).tolist(),
            "ctf": asdict(truth.ctf),
        }
        (work / f"{name}_truth.json").write_text(json.dumps(row))
        rows.append(row)
    return rows


def run_ours(rows: list[dict], threads: int) -> list[dict]:
    import mrcfile

    from pipeline import backend
    from pipeline.ctf_model import CTFParams
    from pipeline.picking.blob import pick_blobs

    backend.use("cpu", threads)
    out = []
    for row in rows:
        wall, cpu = time.perf_counter(), time.process_time()
        with mrcfile.open(row["path"], permissive=True) as handle:
            image = np.asarray(handle.data, dtype=np.float32)
        picks = pick_blobs(image, PIXEL_A, row["diameter_A"], ctf=CTFParams(**row["ctf"]))
        out.append(
            {
                "centers_xy_px": np.asarray(picks.coords_px).reshape(-1, 2),
                "wall_s": time.perf_counter() - wall,
                "cpu_s": time.process_time() - cpu,
            }
        )
    return out


def run_aspire(rows, size_px: int, threads: int, python: Path, work: Path):
    out_json = work / "apple.json"
    cmd = [
        os.path.abspath(python),
        str(Path(__file__).with_name("run_aspire_apple.py")),
        "--particle-size-px",
        str(int(round(rows[0]["diameter_A"] / PIXEL_A))),
        "--size-px",
        str(size_px),
        "--threads",
        str(threads),
        "--out",
        str(out_json.resolve()),
        *[str(Path(r["path"]).resolve()) for r in rows],
    ]
    child = run_child(cmd, env=thread_env(threads), cwd=work)
    if child.returncode != 0:
        raise SystemExit(f"ASPIRE run failed (exit {child.returncode}):\n{child.output[-3000:]}")
    result = json.loads(out_json.read_text())
    return result, child


def score(centers: np.ndarray, truth: list, diameter_px: float):
    from pipeline.picking.evaluate import match_picks

    return match_picks(np.asarray(centers).reshape(-1, 2), np.asarray(truth), 0.3 * diameter_px)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="micrograph side (pixels)")
    parser.add_argument("--n-micrographs", type=int, default=2)
    parser.add_argument("--control", action="store_true", help="add one contaminant-free")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--aspire-python", type=Path, default=DEFAULT_ASPIRE_PYTHON)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cryofac_aspire_picking"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/aspire_picking.md")
    args = parser.parse_args()
    if not args.aspire_python.exists():
        raise SystemExit(f"{args.aspire_python}: no ASPIRE venv (see benchmarks/aspire/README.md)")

    machine_start = machine_line()
    t = time.perf_counter()
    rows = write_inputs(args.workdir, args.size, args.n_micrographs, args.control)
    t_sim = time.perf_counter() - t
    ours = run_ours(rows, args.threads)
    apple, child = run_aspire(rows, args.size, args.threads, args.aspire_python, args.workdir)
    machine_end = machine_line()

    table = [
        "| micrograph | defocus µm | contaminants | true particles | ours P / R / F1 | ours wall s "
        "| ours CPU s | APPLE picks | APPLE P / R / F1 | APPLE wall s | APPLE CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    f1 = {"ours": [], "apple": []}
    for row, mine, theirs in zip(rows, ours, apple["micrographs"], strict=True):
        d_px = row["diameter_A"] / PIXEL_A
        a = score(mine["centers_xy_px"], row["coords_xy_px"], d_px)
        b = score(theirs["centers_xy_px"], row["coords_xy_px"], d_px)
        f1["ours"].append(a.f1)
        f1["apple"].append(b.f1)
        table.append(
            f"| {row['name']} | {row['defocus_A'] / 1e4:.2f} | {row['contaminants']} | "
            f"{len(row['coords_xy_px'])} | {a.precision:.3f} / {a.recall:.3f} / {a.f1:.3f} | "
            f"{mine['wall_s']:.2f} | {mine['cpu_s']:.2f} | {len(theirs['centers_xy_px'])} | "
            f"{b.precision:.3f} / {b.recall:.3f} / {b.f1:.3f} | {theirs['wall_s']:.1f} | "
            f"{theirs['cpu_s']:.1f} |"
        )
    ours_wall = float(np.mean([m["wall_s"] for m in ours]))
    apple_wall = float(np.mean([m["wall_s"] for m in apple["micrographs"]]))
    lines = [
        "# Picking: cryofac blob picker vs ASPIRE APPLE (same micrographs)",
        "",
        f"Produced by `python benchmarks/aspire/bench_picking_vs_aspire.py --size {args.size} "
        f"--n-micrographs {args.n_micrographs} --threads {args.threads}"
        + (" --control" if args.control else "")
        + f"`; ASPIRE {apple['aspire_version']} in its own venv (see benchmarks/aspire/README.md).",
        "",
        f"- Machine at start: {machine_start}",
        f"- Machine at end: {machine_end}",
        f"- Micrographs: {args.size}² at {PIXEL_A} Å/pixel, simulated apoferritin "
        f"({DIAMETER_A:.0f} Å), 40 e/Å², Poisson counts (pipeline.simulate; {t_sim:.0f} s to "
        "simulate, not counted).",
        "- Scoring: one-to-one (Hungarian) matching within 0.3 × diameter; P = precision, "
        "R = recall.",
        f"- Threads: {args.threads} for both (ours: FFT workers; APPLE: conv_map_nthreads, "
        "n_processes=1, OMP/BLAS threads).",
        "",
        *table,
        "",
        f"Mean over micrographs: ours F1 {np.mean(f1['ours']):.3f} in {ours_wall:.2f} s wall "
        f"per micrograph; APPLE F1 {np.mean(f1['apple']):.3f} in {apple_wall:.1f} s wall per "
        f"micrograph. The ASPIRE child process took {child.wall_s:.1f} s wall, "
        f"{child.cpu_s:.1f} s CPU in all (Python + ASPIRE import included).",
        "",
        "Notes:",
        "",
        "- Ours' time includes reading the MRC; it is given the micrograph's CTF (in the "
        "pipeline it comes from CTF estimation). APPLE takes no CTF.",
        "- APPLE settings: particle size = true diameter in pixels, min/max particle size "
        "0.5×/1.3× (APPLE's default 2× maximum exhausts memory in scipy's binary erosion at "
        "4096²), tau1/tau2 = 3 %/30 % of the query windows; otherwise defaults (100-pixel "
        "margins discarded, 2× binning). See run_aspire_apple.py.",
        "- Times are wall-clock on a 2-core machine shared with other engineers' jobs; "
        "the load average is given above. Each benchmark was run once.",
        "",
    ]
    from bench_picking import save_report

    save_report(args.out, lines)


if __name__ == "__main__":
    main()
