"""Reconstruction side by side: ``cryofac reconstruct`` vs ASPIRE ab-initio on the same particles.

    python benchmarks/aspire/bench_reconstruct_vs_aspire.py --particles 3000 --box 96 \
        --pixel 1.5 --snr 0.05 --threads 2 [--aspire-downsample 48 --aspire-classes 300]

1. Simulates a particle stack (``pipeline.simulate``: apoferritin, random poses and shifts,
   per-particle CTF, white noise at ``--snr``), seeded, and writes it to ``--workdir`` as
   MRCS + RELION 3.1 particles.star (no poses) + particles_truth.star, and the truth map.
2. Ours: ``cryofac reconstruct particles.star --symmetry SYM --threads N`` as a child process
   (wall and CPU seconds of the child).
3. ASPIRE: ``run_aspire_reconstruct.py`` in ASPIRE's own venv (child process) on the same
   particles.star: phase flip, downsample, whiten, class averages, common lines
   (CLSyncVoting, C1), MeanEstimator.
4. Both maps scored the same way against the truth map: ours = mean of the two half maps;
   ASPIRE's map is Fourier-padded back to the full box (its resolution cannot pass the
   Nyquist limit of its binned box); each is superimposed on the truth with
   ``pipeline.reconstruction.align.align_maps/apply_alignment`` (rotation, shift, hand)
   and the FSC with the truth is read at 0.5 and 0.143 (``pipeline.reconstruction.fsc``).

Writes ``benchmarks/results/aspire_reconstruct.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_ASPIRE_PYTHON, ROOT, machine_line, run_child, thread_env  # noqa: E402


def fourier_resize(volume: np.ndarray, box: int) -> np.ndarray:
    """Resample a cubic map to ``box`` voxels per side by Fourier padding or cropping.

    The physical extent is kept (the voxel size scales by old/new); values keep their scale.
    Frequencies beyond the smaller box's Nyquist radius are zeroed (a sphere, not a cube).
    """
    volume = np.squeeze(np.asarray(volume))  # ASPIRE writes a (1, n, n, n) stack
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise SystemExit(f"expected a cubic map, got shape {volume.shape}")
    old = volume.shape[0]
    if old == box:
        return np.asarray(volume, dtype=np.float32)
    f = np.fft.fftshift(np.fft.fftn(volume))
    out = np.zeros((box, box, box), dtype=complex)
    n = min(old, box)
    so, sn = old // 2 - n // 2, box // 2 - n // 2
    out[sn : sn + n, sn : sn + n, sn : sn + n] = f[so : so + n, so : so + n, so : so + n]
    # keep a sphere of radius n/2 (the smaller box's Nyquist), not the cube's corners
    k = np.arange(box) - box // 2
    out[(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2) > (n // 2) ** 2] = 0
    resized = np.fft.ifftn(np.fft.ifftshift(out)).real * (box / old) ** 3
    return resized.astype(np.float32)


def score_map(found: np.ndarray, truth: np.ndarray, pixel_A: float) -> dict:
    """Superimpose ``found`` on ``truth`` (rotation, shift, hand), FSC at 0.5 and 0.143 (Å)."""
    from pipeline.reconstruction.align import align_maps, apply_alignment
    from pipeline.reconstruction.fsc import fsc, resolution_at

    alignment = align_maps(found, truth, pixel_A)
    aligned = apply_alignment(found, alignment)
    curve = fsc(aligned, truth)
    box = truth.shape[0]
    return {
        "fsc05_A": resolution_at(curve, box, pixel_A, 0.5),
        "fsc0143_A": resolution_at(curve, box, pixel_A, 0.143),
        "hand_flipped": bool(alignment.flipped),
        "alignment_correlation": float(alignment.correlation),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=3000)
    parser.add_argument("--box", type=int, default=96)
    parser.add_argument("--pixel", type=float, default=1.5, help="Å/pixel")
    parser.add_argument("--snr", type=float, default=0.05)
    parser.add_argument("--symmetry", default="O", help="point group given to ours")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--classes", type=int, default=4, help="ours: 2D classes")
    parser.add_argument("--class-iterations", type=int, default=6, help="ours")
    parser.add_argument("--abinitio-iterations", type=int, default=20, help="ours")
    parser.add_argument("--refine-iterations", type=int, default=8, help="ours")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--aspire-downsample", type=int, default=48, help="ASPIRE box (px)")
    parser.add_argument("--aspire-classes", type=int, default=300)
    parser.add_argument("--aspire-nbor", type=int, default=16)
    parser.add_argument("--skip-ours", action="store_true", help="reuse WORKDIR/ours")
    parser.add_argument("--aspire-python", type=Path, default=DEFAULT_ASPIRE_PYTHON)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cryofac_aspire_reconstruct"))
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/aspire_reconstruct.md"
    )
    args = parser.parse_args()
    if not args.aspire_python.exists():
        raise SystemExit(f"{args.aspire_python}: no ASPIRE venv (see benchmarks/aspire/README.md)")

    from pipeline.io.mrc import read_mrc, write_mrc
    from pipeline.simulate import reference_volume, simulate_particle_stack, write_particle_stack

    machine_start = machine_line()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    truth = reference_volume(args.box, args.pixel)
    write_mrc(work / "truth.mrc", truth, args.pixel)
    images, sim_truth = simulate_particle_stack(
        truth, args.particles, args.pixel, snr=args.snr, rng=args.seed
    )
    star = write_particle_stack(work / "stack", images, sim_truth)
    del images
    t_sim = time.perf_counter() - t

    env = thread_env(args.threads)
    cryofac = Path(sys.executable).with_name("cryofac")
    ours_dir = work / "ours"
    if args.skip_ours and (ours_dir / "ours_time.json").exists():
        saved = json.loads((ours_dir / "ours_time.json").read_text())
        ours_wall, ours_cpu = saved["wall_s"], saved["cpu_s"]
    else:
        cmd = [str(cryofac), "reconstruct", str(star), "--out", str(ours_dir)]
        cmd += ["--symmetry", args.symmetry, "--device", "cpu", "--threads", str(args.threads)]
        cmd += ["--classes", str(args.classes), "--class-iterations", str(args.class_iterations)]
        cmd += ["--abinitio-iterations", str(args.abinitio_iterations)]
        cmd += ["--refine-iterations", str(args.refine_iterations)]
        child = run_child(cmd, env=env)
        if child.returncode != 0:
            raise SystemExit(f"cryofac reconstruct failed:\n{child.output[-3000:]}")
        ours_wall, ours_cpu = child.wall_s, child.cpu_s
        (ours_dir / "ours_time.json").write_text(
            json.dumps({"wall_s": ours_wall, "cpu_s": ours_cpu})
        )
    h1, _ = read_mrc(ours_dir / "half1.mrc")
    h2, _ = read_mrc(ours_dir / "half2.mrc")
    ours = score_map(0.5 * (h1 + h2), truth, args.pixel)
    ours_result = json.loads((ours_dir / "result.json").read_text())

    cmd = [str(args.aspire_python), str(Path(__file__).with_name("run_aspire_reconstruct.py"))]
    cmd += [str(star), "--downsample", str(args.aspire_downsample)]
    cmd += ["--n-classes", str(args.aspire_classes), "--n-nbor", str(args.aspire_nbor)]
    cmd += ["--seed", str(args.seed), "--out", str(work / "aspire_map.mrc")]
    cmd += ["--timings", str(work / "aspire_timings.json")]
    child = run_child(cmd, env=env)
    if child.returncode != 0:
        raise SystemExit(f"ASPIRE run failed:\n{child.output[-3000:]}")
    timings = json.loads((work / "aspire_timings.json").read_text())
    aspire_map, _ = read_mrc(work / "aspire_map.mrc")
    theirs = score_map(fourier_resize(aspire_map, args.box), truth, args.pixel)
    aspire_nyquist = 2 * args.pixel * args.box / args.aspire_downsample
    machine_end = machine_line()

    stage = timings["stages"]
    lines = [
        "# Reconstruction: `cryofac reconstruct` vs ASPIRE ab-initio (same particles)",
        "",
        "Produced by `python benchmarks/aspire/bench_reconstruct_vs_aspire.py "
        f"--particles {args.particles} --box {args.box} --pixel {args.pixel} --snr {args.snr} "
        f"--symmetry {args.symmetry} --classes {args.classes} --class-iterations "
        f"{args.class_iterations} --abinitio-iterations "
        f"{args.abinitio_iterations} --refine-iterations {args.refine_iterations} "
        f"--threads {args.threads} --seed {args.seed} "
        f"--aspire-downsample {args.aspire_downsample} --aspire-classes {args.aspire_classes} "
        f"--aspire-nbor {args.aspire_nbor}`; ASPIRE {timings['aspire_version']} in its own "
        "venv (see benchmarks/aspire/README.md).",
        "",
        f"- Machine at start: {machine_start}",
        f"- Machine at end: {machine_end}",
        f"- Particles: {args.particles} simulated apoferritin images, box {args.box}, "
        f"{args.pixel} Å/pixel, SNR {args.snr}, per-particle CTF (defocus 0.8–2.5 µm), "
        f"random poses and shifts (pipeline.simulate, seed {args.seed}; {t_sim:.0f} s to "
        "simulate, not counted).",
        "- Scoring (both): map superimposed on the truth (rotation, shift, hand) with "
        "pipeline.reconstruction.align, then FSC with the truth map at 0.5 and 0.143.",
        f"- Threads: {args.threads} for both (OMP/BLAS threads of each child; ours --threads).",
        "",
        "| | ours (`cryofac reconstruct`) | ASPIRE |",
        "|---|---|---|",
        f"| method | 2D classes → ab-initio → gold-standard refinement, symmetry "
        f"{args.symmetry}, full box {args.box} | phase flip, bin to {args.aspire_downsample} "
        f"px, whiten, {timings['n_used']} class averages ({args.aspire_nbor} neighbours) → "
        "CLSyncVoting (C1) → MeanEstimator |",
        f"| FSC vs truth @0.5 (Å) | {ours['fsc05_A']:.2f} | {theirs['fsc05_A']:.2f} |",
        f"| FSC vs truth @0.143 (Å) | {ours['fsc0143_A']:.2f} | {theirs['fsc0143_A']:.2f} |",
        f"| best possible (Nyquist of the box used, Å) | {2 * args.pixel:.2f} | "
        f"{aspire_nyquist:.2f} |",
        f"| half-map FSC @0.143 reported by the program (Å) | "
        f"{ours_result['resolution_A']:.2f} | — |",
        f"| alignment correlation with truth | {ours['alignment_correlation']:.3f} | "
        f"{theirs['alignment_correlation']:.3f} |",
        f"| wall time (s) | {ours_wall:.0f} | {child.wall_s:.0f} |",
        f"| CPU time (s, user + system) | {ours_cpu:.0f} | {child.cpu_s:.0f} |",
        f"| ASPIRE stages wall s: preprocess / class averages / common lines / mean | — | "
        f"{stage['preprocess']['wall_s']:.0f} / {stage['class_averages']['wall_s']:.0f} / "
        f"{stage['common_lines']['wall_s']:.0f} / {stage['mean_estimation']['wall_s']:.0f} |",
        "",
        "Notes:",
        "",
        "- ASPIRE's common-lines methods cover C1, Cn and Dn; apoferritin is O, so ASPIRE "
        "runs C1 while ours uses the symmetry it is given. ASPIRE has no refinement stage: "
        "its result is an ab-initio map, ours a refined one.",
        "- ASPIRE follows its own gallery pipeline for experimental data (class averages "
        "from a random selection, then common lines); its map is at the binned pixel size "
        "and is padded back to the full box for scoring.",
        "- Times are wall-clock on a 2-core machine shared with other engineers' jobs; "
        "each benchmark was run once.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
