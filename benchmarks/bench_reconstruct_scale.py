"""Issue 23's benchmark: ``cryofac reconstruct`` on many simulated particles stored on
disk, with the peak memory and wall/CPU time of each stage, the map against the truth,
and a projection for a million particles of box 256.

``simulate``: N particles of the blob test volume (pipeline.simulate) written in chunks
of ``--chunk`` particles, one stack per chunk (as extraction writes one per micrograph),
with one ``particles.star`` over all of them and the true poses in ``truth.npz``; the
simulation never holds more than one chunk.

``run``: ``python -m cryofac.cli reconstruct`` on them under ``/usr/bin/time -v`` (peak RSS,
CPU seconds), then the found map against the truth (FSC 0.5 after alignment, soft
sphere; :mod:`pipeline.reconstruction.truth`), and the true-pose reconstruction of the
same particles. Appends one JSON line to ``--jsonl``.

``project``: a sparse MRC stack of ``--project-particles`` × ``--project-box``² float32
(262 GB at 10⁶ × 256², no disk used) with its STAR file; one process loads it as
``cryofac reconstruct`` does and reads chunks spread over the whole file, measuring its
peak RSS and the per-particle read + Fourier-transform cost at that box.

    nice -n 10 python benchmarks/bench_reconstruct_scale.py simulate --particles 20000 --box 128 --workdir W
    nice -n 10 python benchmarks/bench_reconstruct_scale.py run --workdir W --jsonl benchmarks/results/reconstruct_scale.jsonl
    nice -n 10 python benchmarks/bench_reconstruct_scale.py project --workdir W2 --jsonl ...
    python benchmarks/bench_reconstruct_scale.py report --jsonl ... --out-md benchmarks/results/reconstruct_scale.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def simulate(args) -> Path:
    """Chunks of particles, one stack each, one STAR over all; the truth in truth.npz."""
    import pandas as pd

    from pipeline.io.particles import ParticleTable, read_particles_star, write_particles_star
    from pipeline.simulate.particles import simulate_particle_stack, write_particle_stack
    from pipeline.simulate.volume import blob_volume

    work = Path(args.workdir)
    stack_dir = work / "stack"
    volume = blob_volume(args.box, np.random.default_rng(args.volume_seed), 40, (1.0, 2.5))
    np.save(work / "volume.npy", volume)
    tables, eulers, shifts = [], [], []
    t = time.perf_counter()
    for k, start in enumerate(range(0, args.particles, args.chunk)):
        n = min(args.chunk, args.particles - start)
        images, truth = simulate_particle_stack(
            volume, n, args.pixel, snr=args.snr, rng=[args.seed, k]
        )
        name = f"chunk_{k:05d}.mrcs"
        star = write_particle_stack(
            stack_dir / "chunks", images, truth, stack_name=name, micrograph_name=f"mic_{k}.mrc"
        )
        table = read_particles_star(star)
        table.particles["rlnImageName"] = [f"{i + 1:06d}@chunks/{name}" for i in range(n)]
        tables.append(table)
        eulers.append(truth.eulers_deg)
        shifts.append(truth.shifts_A)
        print(
            f"simulated {start + n}/{args.particles} ({time.perf_counter() - t:.0f} s)", flush=True
        )
    for name in ("particles.star", "particles_truth.star"):
        (stack_dir / "chunks" / name).unlink(missing_ok=True)
    particles = pd.concat([t.particles for t in tables], ignore_index=True)
    star = write_particles_star(
        stack_dir / "particles.star", ParticleTable(tables[0].optics, particles)
    )
    np.savez(
        work / "truth.npz",
        eulers_deg=np.concatenate(eulers),
        shifts_A=np.concatenate(shifts),
        pixel_size_A=args.pixel,
        snr=args.snr,
        simulate_s=time.perf_counter() - t,
    )
    return star


def _time_v(stderr: str) -> dict:
    """Peak RSS (MB), user and system CPU seconds from ``/usr/bin/time -v``."""

    def grab(label: str) -> float:
        match = re.search(rf"{re.escape(label)}:\s*([\d.]+)", stderr)
        return float(match.group(1)) if match else float("nan")

    return {
        "peak_rss_MB": grab("Maximum resident set size (kbytes)") / 1024.0,
        "user_s": grab("User time (seconds)"),
        "system_s": grab("System time (seconds)"),
    }


def true_pose_resolution(star: Path, truth: dict, volume: np.ndarray) -> float:
    from pipeline.reconstruction.truth import true_pose_resolution as resolution
    from pipeline.simulate.particles import ParticleStackTruth

    n = len(truth["eulers_deg"])
    zeros = np.zeros(n)
    stack_truth = ParticleStackTruth(
        truth["eulers_deg"], truth["shifts_A"], zeros, zeros, zeros,
        float(truth["pixel_size_A"]), float(truth["snr"]),
    )  # fmt: skip
    return resolution(star, stack_truth, volume, "C1")


def run(args) -> dict:
    from pipeline.reconstruction.truth import found_resolution

    work = Path(args.workdir)
    star = work / "stack" / "particles.star"
    out = work / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        "/usr/bin/time", "-v", sys.executable, "-m", "cryofac.cli", "reconstruct", str(star),
        "--out", str(out), "--symmetry", "C1", "--threads", str(args.threads),
        "--memory", str(args.memory_mb), *args.extra,
    ]  # fmt: skip
    load_before = os.getloadavg()
    t = time.perf_counter()
    with open(work / "reconstruct.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.PIPE, text=True, env=env)
    wall = time.perf_counter() - t
    (work / "time-v.txt").write_text(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"cryofac reconstruct failed ({proc.returncode}); see {work}")
    result = json.loads((out / "result.json").read_text())
    truth = dict(np.load(work / "truth.npz"))
    volume = np.load(work / "volume.npy")
    found, flipped = found_resolution(out, volume, float(truth["pixel_size_A"]))
    record = {
        "kind": "run",
        "particles": len(truth["eulers_deg"]),
        "box": int(volume.shape[0]),
        "pixel_A": float(truth["pixel_size_A"]),
        "snr": float(truth["snr"]),
        "wall_s": round(wall, 1),
        **_time_v(proc.stderr),
        "timings": result["timings"],
        "boxes_px": result.get("boxes_px"),
        "n_classes": len(result["class_counts"]),
        "claimed_A": result["resolution_A"],
        "found_vs_truth_A": found,
        "hand_flipped": flipped,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "memory_MB_option": args.memory_mb,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if not args.skip_true_pose:
        record["true_pose_A"] = true_pose_resolution(star, truth, volume)
    return record


def project(args) -> dict:
    """Load a sparse stack of a million particles and read chunks across it in this
    process (the caller measures the peak RSS); per-particle read + FFT cost at the box."""
    import mrcfile
    import pandas as pd

    from pipeline.io.particles import ParticleTable, make_optics, write_particles_star

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    n, box = args.project_particles, args.project_box
    stack = work / "huge.mrcs"
    star = work / "huge.star"
    t = time.perf_counter()
    if not star.exists():
        with mrcfile.new(stack, overwrite=True) as mrc:
            mrc.set_data(np.zeros((1, box, box), np.float32))
            mrc.set_image_stack()
            mrc.voxel_size = 1.0
        header = bytearray(stack.read_bytes()[:1024])
        header[8:12] = np.int32(n).tobytes()  # nz
        header[36:40] = np.int32(n).tobytes()  # mz
        with open(stack, "wb") as handle:
            handle.write(bytes(header))
        os.truncate(stack, 1024 + n * box * box * 4)  # a hole: no disk used
        rng = np.random.default_rng(0)
        defocus = rng.uniform(8000, 25000, n)
        particles = pd.DataFrame(
            {
                "rlnImageName": [f"{i + 1:07d}@huge.mrcs" for i in range(n)],
                "rlnOpticsGroup": np.ones(n, dtype=int),
                "rlnDefocusU": defocus + 100,
                "rlnDefocusV": defocus - 100,
                "rlnDefocusAngle": rng.uniform(-90, 90, n),
            }
        )
        write_particles_star(star, ParticleTable(make_optics(1.0, box, 300.0, 2.7, 0.1), particles))
    setup_s = time.perf_counter() - t

    import resource

    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.workspace import ParticleSource

    t = time.perf_counter()
    particles = load_particles(star)
    load_s = time.perf_counter() - t
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    source = ParticleSource(particles.images, particles.ctf_params, 1.0, 512)
    from pipeline.reconstruction import fourier

    plane = fourier.half_plane(box)
    rng = np.random.default_rng(1)
    starts = np.sort(rng.choice(n - 512, args.project_chunks, replace=False))
    t = time.perf_counter()
    c = time.process_time()
    for start in starts:
        rows = np.arange(start, start + 512)
        source.values(rows, plane, plane.kx.size)
        source.ctf(rows, plane, plane.kx.size)
    per_particle_s = (time.perf_counter() - t) / (512 * len(starts))
    per_particle_cpu_s = (time.process_time() - c) / (512 * len(starts))
    # the compact per-particle state of a refinement: poses, origins, halves, classes
    state = {
        "rotations": np.zeros((n, 3, 3)),
        "origins": np.zeros((n, 2)),
        "halves": np.zeros(n, np.int64),
        "classes": np.zeros(n, np.int64),
    }
    state_MB = sum(a.nbytes for a in state.values()) / 1e6
    return {
        "kind": "project",
        "particles": n,
        "box": box,
        "stack_GB": round(os.path.getsize(stack) / 1e9, 1),
        "stack_disk_MB": round(os.stat(stack).st_blocks * 512 / 1e6, 1),
        "setup_s": round(setup_s, 1),
        "load_particles_s": round(load_s, 1),
        "peak_rss_after_load_MB": round(rss_loaded, 1),
        "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "chunks_read": int(len(starts)),
        "read_fft_ctf_per_particle_s": per_particle_s,
        "read_fft_ctf_per_particle_cpu_s": per_particle_cpu_s,
        "per_particle_state_MB": round(state_MB, 1),
        "load": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def report(args) -> None:
    from benchmarks.report import cpu_model, write_report

    records = [json.loads(line) for line in Path(args.jsonl).read_text().splitlines() if line]
    lines = [
        "# `cryofac reconstruct` at scale (issue 23)",
        "",
        f"Machine: {cpu_model()}, 2 cores shared with other engineers (load in each row).",
        "Command: `benchmarks/bench_reconstruct_scale.py` (module docstring).",
        "",
        "| particles × box | wall (s) | CPU (s) | peak RSS (MB) | load / 2D / ab-initio / "
        "refine / post (s) | classes | claimed (Å) | vs truth (Å) | true poses (Å) | load | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in records if r["kind"] == "run"):
        t = r["timings"]
        stages = " / ".join(
            f"{t.get(k, float('nan')):.0f}"
            for k in ("load_s", "class2d_s", "abinitio_s", "refine_s", "postprocess_s")
        )
        lines.append(
            f"| {r['particles']:,} × {r['box']} | {r['wall_s']:.0f} | "
            f"{r['user_s'] + r['system_s']:.0f} | {r['peak_rss_MB']:.0f} | {stages} | "
            f"{r['n_classes']} | {r['claimed_A']:.2f} | {r['found_vs_truth_A']:.2f} | "
            f"{r.get('true_pose_A', float('nan')):.2f} | {r['load_before'][0]}–{r['load_after'][0]} "
            f"| {r['date']} |"
        )
    for r in (r for r in records if r["kind"] == "project"):
        lines += [
            "",
            f"Projection, {r['particles']:,} particles of box {r['box']} "
            f"({r['stack_GB']} GB sparse stack, {r['date']}, load {r['load'][0]}): "
            f"loading the STAR and checking the stack {r['load_particles_s']} s, peak RSS "
            f"{r['peak_rss_after_load_MB']} MB after loading and {r['peak_rss_MB']} MB after "
            f"reading {r['chunks_read']} chunks of 512 spread over the file; read + FFT + CTF "
            f"{1e3 * r['read_fft_ctf_per_particle_s']:.2f} ms per particle "
            f"({1e3 * r['read_fft_ctf_per_particle_cpu_s']:.2f} ms CPU); poses/origins/halves/"
            f"classes {r['per_particle_state_MB']} MB.",
        ]
    write_report(args.out_md, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["simulate", "run", "project", "report"])
    parser.add_argument("--workdir", type=Path)
    # name, type and default of the numeric options
    numbers = """--particles int 20000; --box int 128; --pixel float 1.5; --snr float 0.05;
    --chunk int 2000; --seed int 23; --volume-seed int 21; --threads int 2;
    --memory-mb float 1000; --project-particles int 1000000; --project-box int 256;
    --project-chunks int 20"""
    for item in numbers.split(";"):
        name, kind, default = item.split()
        convert = {"int": int, "float": float}[kind]
        parser.add_argument(name, type=convert, default=convert(default))
    parser.add_argument("--skip-true-pose", action="store_true")
    parser.add_argument("--extra", nargs="*", default=[], help="more cryofac reconstruct options")
    parser.add_argument(
        "--jsonl", type=Path, default=ROOT / "benchmarks/results/reconstruct_scale.jsonl"
    )
    parser.add_argument(
        "--out-md", type=Path, default=ROOT / "benchmarks/results/reconstruct_scale.md"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.action == "report":
        report(args)
        return
    from pipeline import backend

    backend.use("cpu", args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.action == "simulate":
        print(simulate(args))
        return
    record = run(args) if args.action == "run" else project(args)
    print(json.dumps(record))
    args.jsonl.parent.mkdir(parents=True, exist_ok=True)
    with open(args.jsonl, "a") as handle:
        handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
