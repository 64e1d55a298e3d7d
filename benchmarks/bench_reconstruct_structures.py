"""Issue 22's benchmark: ``cryofac reconstruct`` on several structures × seeds, each
against the reconstruction of the same particles at their TRUE poses.

Structures are the PDB-derived (6Z6U subunits) shapes of :mod:`pipeline.simulate.assemblies`:
``pentamer`` (small asymmetric, C1), ``apoferritin`` (O), ``rod`` (elongated, C1) and
``cap`` (large asymmetric, C1). ``pentamer`` and ``apoferritin`` are the development
structures; ``rod`` and ``cap`` are held out (never used to choose anything) and are
reported separately. Per run:

- true-pose resolution: FSC(true-pose map, truth) at 0.5 inside a soft sphere;
- found resolution: FSC(found map aligned to the truth incl. hand, truth) at 0.5;
- ratio found / true (bar ≤ 1.2) and claimed / found (bar: within 20 %), the claim being
  ``result.json``'s mask-corrected half-map FSC at 0.143;
- the run's ``warnings`` (a wrong map should be warned about).

Each run appends one JSON line to ``--jsonl`` (so a stopped sweep keeps what it measured);
``--report`` rebuilds the markdown tables from it.

    nice -n 10 python benchmarks/bench_reconstruct_structures.py --structures pentamer apoferritin \
        --seeds 1 2 3 4 5 --jsonl /tmp/structs.jsonl
    python benchmarks/bench_reconstruct_structures.py --report --jsonl /tmp/structs.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SYMMETRY = {"pentamer": "C1", "apoferritin": "O", "rod": "C1", "cap": "C1"}
HELD_OUT = ("rod", "cap")


def _commit() -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], check=False).returncode
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_case(structure: str, seed: int, args) -> dict:
    from pipeline.reconstruction.options import (
        AbinitioOptions,
        ReconstructOptions,
        RefineOptions,
    )
    from pipeline.reconstruction.run import run_reconstruction
    from pipeline.reconstruction.truth import found_resolution, true_pose_resolution
    from pipeline.simulate.assemblies import assembly_volume
    from pipeline.simulate.particles import simulate_particle_stack, write_particle_stack

    symmetry = SYMMETRY[structure]
    abinitio = AbinitioOptions(
        iterations=args.abinitio_iterations,
        n_starts=args.abinitio_starts,
        explore_fraction=args.abinitio_explore,
        rounds=args.abinitio_rounds,
        posterior=args.abinitio_posterior,
        independent_halves=not args.shared_abinitio,
    )
    volume = assembly_volume(structure, args.box, args.pixel)
    images, truth = simulate_particle_stack(
        volume, args.particles, args.pixel, snr=args.snr, rng=1000 * seed + 7
    )
    if args.workdir is not None:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"bench_{structure}_{seed}_", dir=args.workdir))
    star = write_particle_stack(work / "stack", images, truth)
    t = time.perf_counter()
    c0 = time.process_time()
    result = run_reconstruction(
        star,
        work / "run",
        ReconstructOptions(
            symmetry=symmetry,
            seed=seed,
            abinitio=abinitio,
            refine=RefineOptions(top_k=args.top_k, keep_best=args.keep_best),
        ),
        progress=None,
    )
    wall, cpu = time.perf_counter() - t, time.process_time() - c0
    res_true = true_pose_resolution(star, truth, volume, symmetry)
    res_found, flipped = found_resolution(work / "run", volume, args.pixel)
    claimed = float(result["resolution_A"])
    return {
        "structure": structure,
        "held_out": structure in HELD_OUT,
        "seed": seed,
        "box": args.box,
        "pixel_A": args.pixel,
        "particles": args.particles,
        "snr": args.snr,
        "abinitio_iterations": args.abinitio_iterations,
        "abinitio_starts": args.abinitio_starts,
        "abinitio_explore": args.abinitio_explore,
        "abinitio_rounds": args.abinitio_rounds,
        "abinitio_posterior": args.abinitio_posterior,
        "independent_halves": not args.shared_abinitio,
        "top_k": args.top_k,
        "keep_best": args.keep_best,
        "refine_kept": [h for h in result["refine_history"] if h["iteration"] == "kept"],
        "abinitio_agreement_A": result["abinitio"].get("halves_agreement_A"),
        "particle_support": result.get("particle_support"),
        "mask_edge_px": result["options"].get("postprocess", {}).get("mask_edge_px"),
        "code": _commit(),
        "true_pose_A": round(res_true, 2),
        "found_A": round(res_found, 2),
        "claimed_A": round(claimed, 2),
        "ratio_found_true": round(res_found / res_true, 3),
        "ratio_claimed_found": round(claimed / res_found, 3),
        "hand_flipped": flipped,
        "warnings": result.get("warnings", []),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _final_warnings(row: dict) -> list[str]:
    """The run's warnings, plus the Nyquist one for rows written by code without it (it
    depends on the claim and the pixel size only: ``PostprocessOptions.nyquist_factor``)."""
    from pipeline.reconstruction.options import PostprocessOptions

    warnings = list(row["warnings"])
    nyquist = 2.0 * row["pixel_A"]
    if not any("Nyquist" in w for w in warnings) and (
        row["claimed_A"] <= PostprocessOptions().nyquist_factor * nyquist
    ):
        warnings.append("Nyquist (added from the claim: the run's code did not have it)")
    return warnings


def _kinds(warnings: list[str]) -> str:
    """Which checks warned: halves' ab-initio maps differ, runs disagree, particles do
    not support the halves' agreement, radial profile only."""
    keys = {
        "found different structures": "halves differ",
        "ab-initio runs led refinement": "runs disagree",
        "better than their particles": "particles don't support",
        "radial profile": "radial profile",
        "Nyquist": "Nyquist",
    }
    return ", ".join(name for text, name in keys.items() if any(text in w for w in warnings))


def report(rows: list[dict]) -> str:
    lines = []
    for held in (False, True):
        part = [r for r in rows if r["held_out"] == held]
        if not part:
            continue
        lines += [
            f"\n### {'held-out' if held else 'development'} structures\n",
            "| structure | runs | found/true: median (min–max) | ≤ 1.2× | claimed/found: median "
            "(min–max) | within 20 % | warned | wrong (> 1.2×) and not warned | wall s median "
            "(load) |",
            "|---|---:|---|---:|---|---:|---:|---:|---|",
        ]
        for name in sorted({r["structure"] for r in part}):
            rs = [r for r in part if r["structure"] == name]
            ratio = np.array([r["ratio_found_true"] for r in rs])
            claim = np.array([r["ratio_claimed_found"] for r in rs])
            warned = [bool(_final_warnings(r)) for r in rs]
            silent_wrong = sum(
                1 for r, w in zip(rs, warned, strict=True) if not w and r["ratio_found_true"] > 1.2
            )
            loads = [r["load"] for r in rs]
            lines.append(
                f"| {name} ({', '.join(str(r['seed']) for r in rs)}) | {len(rs)} | "
                f"{np.median(ratio):.2f} ({ratio.min():.2f}–{ratio.max():.2f}) | "
                f"{int((ratio <= 1.2).sum())}/{len(rs)} | {np.median(claim):.2f} "
                f"({claim.min():.2f}–{claim.max():.2f}) | "
                f"{int((np.abs(claim - 1) <= 0.2).sum())}/{len(rs)} | {sum(warned)}/{len(rs)} | "
                f"{silent_wrong} | {np.median([r['wall_s'] for r in rs]):.0f} "
                f"({min(loads):.1f}–{max(loads):.1f}) |"
            )
    lines += [
        "\n| structure | seed | refine top_k, keep_best | true-pose Å | found Å | claimed Å | "
        "found/true | claimed/found | particles support Å (/found) | warnings (which) | "
        "CPU s | wall s | load |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in rows:
        sup = r.get("particle_support") or {}
        supported = (
            f"{sup['supported_A']:.2f} ({sup['supported_A'] / r['found_A']:.2f})" if sup else "—"
        )
        lines.append(
            f"| {r['structure']} | {r['seed']} | {r.get('top_k', 1)}, {r.get('keep_best', False)} | "
            f"{r['true_pose_A']:.2f} | {r['found_A']:.2f} | "
            f"{r['claimed_A']:.2f} | {r['ratio_found_true']:.2f} | {r['ratio_claimed_found']:.2f} | "
            f"{supported} | {len(_final_warnings(r))} ({_kinds(_final_warnings(r))}) | "
            f"{r.get('cpu_s', float('nan')):.0f} | {r['wall_s']:.0f} | {r['load']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    from pipeline.reconstruction.options import AbinitioOptions, RefineOptions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", nargs="+", default=list(SYMMETRY), choices=list(SYMMETRY))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--box", type=int, default=40)
    parser.add_argument("--pixel", type=float, default=7.0)
    parser.add_argument("--particles", type=int, default=800)
    parser.add_argument("--snr", type=float, default=0.05)
    defaults = AbinitioOptions()
    parser.add_argument("--abinitio-iterations", type=int, default=defaults.iterations)
    parser.add_argument("--abinitio-starts", type=int, default=defaults.n_starts)
    parser.add_argument("--abinitio-explore", type=float, default=defaults.explore_fraction)
    parser.add_argument("--abinitio-rounds", type=int, default=defaults.rounds)
    parser.add_argument(
        "--abinitio-posterior", choices=["top", "sampled"], default=defaults.posterior
    )
    parser.add_argument(
        "--shared-abinitio", action="store_true", help="one ab-initio for both halves (before)"
    )
    parser.add_argument(
        "--top-k", type=int, default=RefineOptions().top_k, help="RefineOptions.top_k"
    )
    parser.add_argument(
        "--keep-best",
        action=argparse.BooleanOptionalAction,
        default=RefineOptions().keep_best,
        help="RefineOptions.keep_best",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--jsonl", type=Path, required=True)
    parser.add_argument("--report", action="store_true", help="only print the tables")
    parser.add_argument("--out-md", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()
    if not args.report:
        from pipeline import backend

        backend.use("cpu", args.threads)
        for seed in args.seeds:
            for structure in args.structures:
                row = run_case(structure, seed, args)
                print(json.dumps(row), flush=True)
                with args.jsonl.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in args.jsonl.read_text().splitlines() if line.strip()]
    if args.out_md is None:
        print(report(rows))
        return
    from benchmarks.report import cpu_model, load_average, write_report

    header = [
        "# Reconstruction on several structures × seeds (issue 22)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs; load when written: "
        f"{load_average()} (each run's load is in its row). Raw rows: `{args.jsonl.name}`.",
    ]
    write_report(args.out_md, [*header, report(rows)])


if __name__ == "__main__":
    main()
