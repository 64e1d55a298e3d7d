"""Benchmark of ``cryofac reconstruct`` on a simulated apoferritin stack (issue 5's bar).

Simulates particles with per-particle CTF and random poses (pipeline.simulate), runs the
whole reconstruction without poses, and compares with the reconstruction from the TRUE
poses (same particles, same symmetry, same back-projector):

- truth resolution: FSC(map aligned to the truth incl. hand, truth) at 0.5;
- half-map estimate: FSC(half1, half2) at 0.143;
- wall time per stage on this machine.

Writes ``benchmarks/results/reconstruct.md`` (or ``--out-md``).

    python benchmarks/bench_reconstruct.py --box 96 --pixel 1.5 --particles 3000 --snr 0.05
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def peak_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def true_pose_map(star: Path, truth, symmetry: str):
    from pipeline.reconstruction import refine
    from pipeline.reconstruction.particles import load_particles

    particles = load_particles(star)
    ws = refine.build_workspace(
        particles.images, particles.ctf_params, particles.pixel_size_A, symmetry
    )
    idx = np.arange(ws.n)
    origins = -truth.shifts_A / truth.pixel_size_A  # rlnOriginX = −(particle offset)
    half = [idx[::2], idx[1::2]]
    maps = []
    for h in half:
        bp = refine.backproject_particles(ws, h, truth.rotations, origins)
        maps.append(bp.reconstruct(ws.box // 2 - 1, ssnr_default=1.0))
    from pipeline.reconstruction.fsc import fsc

    curve = fsc(maps[0], maps[1])
    bp = refine.backproject_particles(ws, idx, truth.rotations, origins)
    return bp.reconstruct(ws.box // 2 - 1, fsc=curve), maps


def evaluate(out_dir: Path, star: Path, truth, volume: np.ndarray, symmetry: str) -> dict:
    from pipeline import backend
    from pipeline.io.mrc import read_mrc
    from pipeline.reconstruction.align import align_maps, apply_alignment
    from pipeline.reconstruction.fsc import fsc, resolution_at

    pix = truth.pixel_size_A
    box = volume.shape[0]
    from pipeline.reconstruction.refine import soft_sphere

    sphere = backend.to_numpy(soft_sphere(box, 0.45 * box))  # the mask of the half-map FSC
    true_map, _ = true_pose_map(star, truth, symmetry)
    true_map = backend.to_numpy(true_map)
    res_true = resolution_at(fsc(true_map * sphere, volume), box, pix, 0.5)
    h1, _ = read_mrc(out_dir / "half1.mrc")
    h2, _ = read_mrc(out_dir / "half2.mrc")
    found = 0.5 * (h1 + h2)
    alignment = align_maps(found, volume, pix)
    aligned = apply_alignment(found, alignment)
    res_found = resolution_at(fsc(aligned * sphere, volume), box, pix, 0.5)
    result = json.loads((out_dir / "result.json").read_text())
    return {
        "true_pose_resolution_A": res_true,
        "found_resolution_vs_truth_A": res_found,
        "ratio_found_to_true": res_found / res_true,
        "half_map_resolution_A": result["resolution_A"],
        "half_map_vs_truth_rel_diff": abs(result["resolution_A"] - res_found) / res_found,
        "hand_flipped": bool(alignment.flipped),
        "alignment_correlation": alignment.correlation,
        "result": result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--box", type=int, default=96)
    parser.add_argument("--pixel", type=float, default=1.5)
    parser.add_argument("--particles", type=int, default=3000)
    parser.add_argument("--snr", type=float, default=0.05)
    parser.add_argument("--symmetry", default="O")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--volume", choices=["apoferritin", "blobs"], default="apoferritin")
    parser.add_argument(
        "--volume-seed", type=int, default=21, help="rng of the blob volume (21: the bar case)"
    )
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--abinitio-iterations", type=int, default=30)
    parser.add_argument(
        "--refine-iterations", type=int, default=None, help="[refine.default_iterations]"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--out-md", type=Path, default=Path(__file__).parent / "results" / "reconstruct.md"
    )
    args = parser.parse_args()

    from pipeline import backend
    from pipeline.reconstruction.run import run_reconstruction
    from pipeline.simulate.particles import simulate_particle_stack, write_particle_stack
    from pipeline.simulate.volume import reference_volume

    backend.use(args.device, args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_reconstruct_"))
    if args.volume == "apoferritin":
        volume = reference_volume(args.box, args.pixel)
    else:  # the asymmetric Gaussian-blob test volume of the CI bar test
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from pipeline.simulate.volume import blob_volume

        volume = blob_volume(args.box, np.random.default_rng(args.volume_seed), 40, (1.0, 2.5))
    t = time.perf_counter()
    images, truth = simulate_particle_stack(
        volume, args.particles, args.pixel, snr=args.snr, rng=args.seed
    )
    star = write_particle_stack(work / "stack", images, truth)
    t_sim = time.perf_counter() - t
    t = time.perf_counter()
    run_reconstruction(
        star,
        work / "run",
        symmetry=args.symmetry,
        n_classes=args.classes,
        abinitio_iterations=args.abinitio_iterations,
        refine_iterations=args.refine_iterations,
        seed=args.seed,
        progress=print,
    )
    wall = time.perf_counter() - t
    ev = evaluate(work / "run", star, truth, volume, args.symmetry)
    load = os.getloadavg()[0]
    lines = [
        "# `cryofac reconstruct` benchmark",
        "",
        f"Simulated {args.volume} (volume seed {args.volume_seed}; pipeline.simulate), box {args.box}, {args.pixel} Å/pixel, "
        f"{args.particles} particles, SNR {args.snr}, per-particle CTF, random poses and shifts; "
        f"symmetry {args.symmetry}; {args.classes} 2D classes, {args.abinitio_iterations} ab-initio "
        f"and ≤ {args.refine_iterations or 'default'} refinement iterations; device {args.device}, {args.threads} threads "
        f"({platform.processor() or platform.machine()}, load average {load:.1f} at the end).",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| wall time, reconstruct (s) | {wall:.0f} |",
        f"| peak memory of this process (MB) | {peak_mb():.0f} |",
        f"| mask-corrected claim @0.143 (Å); sphere-masked | {ev['result']['resolution_A']:.2f}; "
        f"{ev['result'].get('resolution_sphere_mask_A', float('nan')):.2f} |",
        f"| of which 2D / ab-initio / refine / post (s) | "
        f"{ev['result']['timings']['class2d_s']:.0f} / {ev['result']['timings']['abinitio_s']:.0f} / "
        f"{ev['result']['timings']['refine_s']:.0f} / {ev['result']['timings']['postprocess_s']:.0f} |",
        f"| resolution with TRUE poses, FSC vs truth @0.5, spherical mask (Å) | {ev['true_pose_resolution_A']:.2f} |",
        f"| resolution found, FSC vs truth @0.5 after alignment (Å) | {ev['found_resolution_vs_truth_A']:.2f} |",
        f"| ratio found / true (bar ≤ 1.3) | {ev['ratio_found_to_true']:.2f} |",
        f"| half-map FSC @0.143 (Å) | {ev['half_map_resolution_A']:.2f} |",
        f"| half-map vs truth estimate, relative difference (bar ≤ 0.20) | {ev['half_map_vs_truth_rel_diff']:.2f} |",
        f"| simulation time (s, not counted) | {t_sim:.0f} |",
        f"| ab-initio halves agree to (Å, FSC 0.5; independent halves) | "
        f"{ev['result']['abinitio'].get('halves_agreement_A', 'n/a')} |",
        f"| warnings in result.json | {len(ev['result'].get('warnings', []))}: "
        f"{' / '.join(ev['result'].get('warnings', [])) or '-'} |",
        "",
        "Side by side with ASPIRE on the same particles: "
        "benchmarks/aspire/bench_reconstruct_vs_aspire.py --ours-dir WORKDIR/run "
        "--star WORKDIR/stack/particles.star.",
        "",
    ]
    args.out_md.parent.mkdir(parents=True, exist_ok=True)
    if args.out_md.exists():  # keep earlier configurations: append
        lines = ["", "---", "", *lines]
        with open(args.out_md, "a") as handle:
            handle.write("\n".join(lines))
    else:
        args.out_md.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
