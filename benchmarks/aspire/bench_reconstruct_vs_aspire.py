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

``--volume blobs`` uses the asymmetric Gaussian-blob volume of ``benchmarks/bench_reconstruct.py``
(``tests.pipeline.reconstruction.helpers.blob_volume(box, default_rng(21), 40, (1.0, 2.5))``)
instead of apoferritin. ``--ours-dir DIR --star PATH`` skips steps 1–2: it scores an existing
``cryofac reconstruct`` output folder (half1.mrc, half2.mrc, result.json) made from an existing
stack (e.g. the ``run/`` and ``stack/particles.star`` of ``bench_reconstruct.py --workdir``);
``--volume/--box/--pixel`` must then describe the volume that stack was simulated from (the
truth volume does not depend on the simulation seed). Ours' wall time is then
``result.json`` → ``timings.total_s`` (load + 2D + ab-initio + refine + post, measured inside
the run); its CPU time is only known if given with ``--ours-cpu-s``.

Writes ``benchmarks/results/aspire_reconstruct.md`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DEFAULT_ASPIRE_PYTHON,
    ROOT,
    machine_line,
    run_child,
    thread_env,
)

from benchmarks.report import write_report  # noqa: E402


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


def truth_volume(name: str, box: int, pixel_A: float) -> np.ndarray:
    """The map the particles were simulated from (same constructors as bench_reconstruct.py)."""
    if name == "apoferritin":
        from pipeline.simulate import reference_volume

        return reference_volume(box, pixel_A)
    from pipeline.simulate.volume import blob_volume

    return blob_volume(box, np.random.default_rng(21), 40, (1.0, 2.5))


def check_stack(star: Path, box: int, pixel_A: float, particles: int) -> None:
    """Refuse a stack whose box, pixel size or particle count differ from the arguments."""
    from pipeline.io.particles import read_particles_star

    table = read_particles_star(star)
    pix = {float(v) for v in table.optics["rlnImagePixelSize"]}
    size = {int(v) for v in table.optics["rlnImageSize"]}
    if pix != {pixel_A} or size != {box} or len(table) != particles:
        raise SystemExit(
            f"{star}: {len(table)} particles, box {size}, pixel {pix} Å; arguments say "
            f"{particles}, {box}, {pixel_A}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume", choices=["apoferritin", "blobs"], default="apoferritin")
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
    parser.add_argument(
        "--ours-dir", type=Path, help="score this finished cryofac reconstruct folder"
    )
    parser.add_argument("--star", type=Path, help="with --ours-dir: the stack it was run on")
    parser.add_argument("--ours-cpu-s", type=float, help="with --ours-dir: ours' CPU seconds")
    parser.add_argument("--ours-note", default="", help="with --ours-dir: how ours was run")
    parser.add_argument(
        "--ours-wait-s",
        type=float,
        default=0.0,
        help="with --ours-dir: after ASPIRE, wait up to this long for DIR/result.json "
        "(polled every 2 min); without it the table has ASPIRE's column only",
    )
    parser.add_argument(
        "--skip-aspire", action="store_true", help="reuse WORKDIR's ASPIRE map and times"
    )
    parser.add_argument("--aspire-python", type=Path, default=DEFAULT_ASPIRE_PYTHON)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cryofac_aspire_reconstruct"))
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/aspire_reconstruct.md"
    )
    args = parser.parse_args()
    if (args.ours_dir is None) != (args.star is None):
        parser.error("--ours-dir and --star go together")
    if not args.aspire_python.exists():
        raise SystemExit(f"{args.aspire_python}: no ASPIRE venv (see benchmarks/aspire/README.md)")

    from pipeline.io.mrc import read_mrc, write_mrc
    from pipeline.simulate import simulate_particle_stack, write_particle_stack

    machine_start = machine_line()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    truth = truth_volume(args.volume, args.box, args.pixel)
    write_mrc(work / "truth.mrc", truth, args.pixel)
    existing = args.ours_dir is not None
    if existing:
        star = args.star
        check_stack(star, args.box, args.pixel, args.particles)
    else:
        images, sim_truth = simulate_particle_stack(
            truth, args.particles, args.pixel, snr=args.snr, rng=args.seed
        )
        star = write_particle_stack(work / "stack", images, sim_truth)
        del images
    t_sim = time.perf_counter() - t

    env = thread_env(args.threads)

    def run_aspire() -> tuple[float, float, str, str]:
        """ASPIRE's child (or, with --skip-aspire, its saved outputs): wall s, CPU s, machine
        lines before and after it."""
        saved = work / "aspire_time.json"
        if args.skip_aspire and saved.exists():
            times = json.loads(saved.read_text())
            return times["wall_s"], times["cpu_s"], times["machine_start"], times["machine_end"]
        before = machine_line()
        script = Path(__file__).with_name("run_aspire_reconstruct.py")
        cmd = [os.path.abspath(args.aspire_python), str(script)]
        cmd += [str(Path(star).resolve()), "--downsample", str(args.aspire_downsample)]
        cmd += ["--n-classes", str(args.aspire_classes), "--n-nbor", str(args.aspire_nbor)]
        cmd += ["--seed", str(args.seed), "--out", str(work / "aspire_map.mrc")]
        cmd += ["--timings", str(work / "aspire_timings.json")]
        child = run_child(cmd, env=env, cwd=work)
        if child.returncode != 0:
            raise SystemExit(f"ASPIRE run failed:\n{child.output[-3000:]}")
        after = machine_line()
        times = {"wall_s": child.wall_s, "cpu_s": child.cpu_s}
        saved.write_text(json.dumps({**times, "machine_start": before, "machine_end": after}))
        return child.wall_s, child.cpu_s, before, after

    cryofac = Path(sys.executable).with_name("cryofac")
    ours_dir = args.ours_dir if existing else work / "ours"
    ours_cpu_label = "CPU time (s, user + system)"
    ours_wall_label = "wall time (s)"
    if existing:  # ASPIRE first: ours may still be running elsewhere
        aspire_wall, aspire_cpu, aspire_m0, aspire_m1 = run_aspire()
        deadline = time.monotonic() + args.ours_wait_s
        while not (ours_dir / "result.json").exists() and time.monotonic() < deadline:
            time.sleep(min(120.0, max(1.0, deadline - time.monotonic())))
        ours_done = (ours_dir / "result.json").exists()
        ours_wall, ours_cpu = None, args.ours_cpu_s
        if ours_done:
            ours_wall = json.loads((ours_dir / "result.json").read_text())["timings"]["total_s"]
        ours_wall_label = "wall time (s; ours: result.json timings.total_s)"
    else:
        ours_done = True
        if args.skip_ours and (ours_dir / "ours_time.json").exists():
            saved = json.loads((ours_dir / "ours_time.json").read_text())
            ours_wall, ours_cpu = saved["wall_s"], saved["cpu_s"]
        else:
            cmd = [str(cryofac), "reconstruct", str(star), "--out", str(ours_dir)]
            cmd += ["--symmetry", args.symmetry, "--device", "cpu"]
            cmd += ["--threads", str(args.threads), "--classes", str(args.classes)]
            cmd += ["--class-iterations", str(args.class_iterations)]
            cmd += ["--abinitio-iterations", str(args.abinitio_iterations)]
            cmd += ["--refine-iterations", str(args.refine_iterations)]
            child = run_child(cmd, env=env)
            if child.returncode != 0:
                raise SystemExit(f"cryofac reconstruct failed:\n{child.output[-3000:]}")
            ours_wall, ours_cpu = child.wall_s, child.cpu_s
            (ours_dir / "ours_time.json").write_text(
                json.dumps({"wall_s": ours_wall, "cpu_s": ours_cpu})
            )
        aspire_wall, aspire_cpu, aspire_m0, aspire_m1 = run_aspire()
    if ours_done:
        h1, _ = read_mrc(ours_dir / "half1.mrc")
        h2, _ = read_mrc(ours_dir / "half2.mrc")
        ours = score_map(0.5 * (h1 + h2), truth, args.pixel)
        ours_result = json.loads((ours_dir / "result.json").read_text())
    else:
        ours = {"fsc05_A": None, "fsc0143_A": None, "alignment_correlation": None}
        ours_result = {"resolution_A": None}

    timings = json.loads((work / "aspire_timings.json").read_text())
    aspire_map, _ = read_mrc(work / "aspire_map.mrc")
    theirs = score_map(fourier_resize(aspire_map, args.box), truth, args.pixel)
    aspire_nyquist = 2 * args.pixel * args.box / args.aspire_downsample
    machine_end = machine_line()

    stage = timings["stages"]
    if existing:
        ours_args = f"--ours-dir {args.ours_dir} --star {args.star} "
        if args.ours_cpu_s is not None:
            ours_args += f"--ours-cpu-s {args.ours_cpu_s:.0f} "
    else:
        ours_args = (
            f"--classes {args.classes} --class-iterations {args.class_iterations} "
            f"--abinitio-iterations {args.abinitio_iterations} "
            f"--refine-iterations {args.refine_iterations} "
        )
    volume_name = "apoferritin" if args.volume == "apoferritin" else "Gaussian-blob (C1)"
    if existing:
        particles_line = (
            f"- Particles: the existing stack {args.star} ({args.particles} images, box "
            f"{args.box}, {args.pixel} Å/pixel, SNR {args.snr}, per-particle CTF, random poses "
            f"and shifts, simulated from the {volume_name} volume); scored against that "
            "volume, rebuilt here."
        )
        ours_line = (
            f"- Ours: the existing `cryofac reconstruct` output {args.ours_dir}, not run by "
            f"this script. {args.ours_note}".rstrip()
        )
    else:
        particles_line = (
            f"- Particles: {args.particles} simulated {volume_name} images, box {args.box}, "
            f"{args.pixel} Å/pixel, SNR {args.snr}, per-particle CTF (defocus 0.8–2.5 µm), "
            f"random poses and shifts (pipeline.simulate, seed {args.seed}; {t_sim:.0f} s to "
            "simulate, not counted)."
        )
        ours_line = ""

    def cell(value: float | None, fmt: str) -> str:
        if value is None:
            return "not finished" if not ours_done else "—"
        return format(value, fmt)

    lines = [
        "# Reconstruction: `cryofac reconstruct` vs ASPIRE ab-initio (same particles)",
        "",
        "Produced by `python benchmarks/aspire/bench_reconstruct_vs_aspire.py "
        f"--volume {args.volume} "
        f"--particles {args.particles} --box {args.box} --pixel {args.pixel} --snr {args.snr} "
        f"--symmetry {args.symmetry} {ours_args}"
        f"--threads {args.threads} --seed {args.seed} "
        f"--aspire-downsample {args.aspire_downsample} --aspire-classes {args.aspire_classes} "
        f"--aspire-nbor {args.aspire_nbor}`; ASPIRE {timings['aspire_version']} in its own "
        "venv (see benchmarks/aspire/README.md).",
        "",
        f"- Machine at start: {machine_start}",
        f"- Machine at end: {machine_end}",
        f"- Machine when ASPIRE started: {aspire_m0}",
        f"- Machine when ASPIRE ended: {aspire_m1}",
        particles_line,
        *([ours_line] if ours_line else []),
        "- Scoring (both): map superimposed on the truth (rotation, shift, hand) with "
        "pipeline.reconstruction.align, then FSC with the truth map at 0.5 and 0.143.",
        f"- Threads: {args.threads} for ASPIRE (OMP/BLAS threads of the child)"
        + ("." if existing else f" and ours (--threads {args.threads})."),
        "",
        "| | ours (`cryofac reconstruct`) | ASPIRE |",
        "|---|---|---|",
        f"| method | 2D classes → ab-initio → gold-standard refinement, symmetry "
        f"{args.symmetry}, full box {args.box} | phase flip, bin to {args.aspire_downsample} "
        f"px, whiten, {timings['n_used']} class averages ({args.aspire_nbor} neighbours) → "
        "CLSyncVoting (C1) → MeanEstimator |",
        f"| FSC vs truth @0.5 (Å) | {cell(ours['fsc05_A'], '.2f')} | {theirs['fsc05_A']:.2f} |",
        f"| FSC vs truth @0.143 (Å) | {cell(ours['fsc0143_A'], '.2f')} | {theirs['fsc0143_A']:.2f} |",
        f"| best possible (Nyquist of the box used, Å) | {2 * args.pixel:.2f} | "
        f"{aspire_nyquist:.2f} |",
        f"| half-map FSC @0.143 reported by the program (Å) | "
        f"{cell(ours_result['resolution_A'], '.2f')} | — |",
        f"| alignment correlation with truth | {cell(ours['alignment_correlation'], '.3f')} | "
        f"{theirs['alignment_correlation']:.3f} |",
        f"| {ours_wall_label} | {cell(ours_wall, '.0f')} | {aspire_wall:.0f} |",
        f"| {ours_cpu_label} | {cell(ours_cpu, '.0f')} | {aspire_cpu:.0f} |",
        f"| ASPIRE stages wall s: preprocess / class averages / common lines / mean | — | "
        f"{stage['preprocess']['wall_s']:.0f} / {stage['class_averages']['wall_s']:.0f} / "
        f"{stage['common_lines']['wall_s']:.0f} / {stage['mean_estimation']['wall_s']:.0f} |",
        "",
        "Notes:",
        "",
        "- ASPIRE's common-lines methods cover C1, Cn and Dn; ASPIRE runs C1 here, ours the "
        f"symmetry it is given ({args.symmetry}). ASPIRE has no refinement stage: its result "
        "is an ab-initio map, ours a refined one.",
        "- ASPIRE follows its own gallery pipeline for experimental data (class averages "
        "from a random selection, then common lines); its map is at the binned pixel size "
        "and is padded back to the full box for scoring.",
        "- Times are wall-clock on a 2-core machine shared with other engineers' jobs; "
        "each benchmark was run once.",
        "",
    ]
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
