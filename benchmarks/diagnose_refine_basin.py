"""Which starting maps lead gold-standard refinement to the truth (a diagnostic for issue 5/10).

Takes a finished ``cryofac reconstruct`` folder (its ``input_particles.star`` and
``abinitio.mrc``) and the simulated truth map, and refines the same particles from
several starts, each low-passed to 30 Å by the refinement itself:

- the truth, the truth inverted (other hand), and their 50/50 mixture;
- the folder's ab-initio map, and any map given with ``--start``.

For each result it prints the half-map FSC at 0.143, the FSC against the truth at 0.5
after alignment (rotation, shift, hand) and the particles' fit (``refine.particle_fit``,
how ``cryofac reconstruct`` chooses between ab-initio runs), and, with ``--scores``, the
particles' mean best whitened score against each refined map at several resolutions (a
higher score is a better fit of the particles; a wrong map that both halves reproduce
scores lower).

    python benchmarks/diagnose_refine_basin.py DEMO/runs/*/reconstruct/p0000567 \
        DEMO/raw/session-1/truth/truth_map.mrc --symmetry O --scores

Used for BENCHMARKS.md ("Not met for apoferritin", issue 5). Minutes on 2 CPUs for the
demo's 567 particles at box 64.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def fit_truth(truth: np.ndarray, truth_pixel_A: float, box: int, pixel_A: float) -> np.ndarray:
    """The truth resampled to ``pixel_A`` and cropped or padded to ``box`` (centred)."""
    from scipy import ndimage

    zoomed = ndimage.zoom(np.asarray(truth, np.float32), truth_pixel_A / pixel_A, order=3)
    out = np.zeros((box, box, box), np.float32)
    n = zoomed.shape[0]
    if n >= box:
        lo = n // 2 - box // 2
        return np.ascontiguousarray(zoomed[lo : lo + box, lo : lo + box, lo : lo + box])
    lo = box // 2 - n // 2
    out[lo : lo + n, lo : lo + n, lo : lo + n] = zoomed
    return out


def inverted(volume: np.ndarray) -> np.ndarray:
    """The map inverted through its centre voxel (box // 2): the other hand."""
    return np.roll(volume[::-1, ::-1, ::-1], 1, axis=(0, 1, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a cryofac reconstruct output folder")
    parser.add_argument("truth", type=Path, help="the simulated truth map (MRC)")
    parser.add_argument("--symmetry", default="C1")
    parser.add_argument(
        "--iterations", type=int, default=None, help="refinement iterations [refine's default]"
    )
    parser.add_argument(
        "--start", type=Path, action="append", default=[], help="another start (MRC); repeatable"
    )
    parser.add_argument("--no-truth-starts", action="store_true", help="only the maps given")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scores", action="store_true", help="particles' fit to each map")
    args = parser.parse_args()

    from pipeline import backend
    from pipeline.io.mrc import read_mrc
    from pipeline.reconstruction import fourier, refine, search
    from pipeline.reconstruction.align import align_maps, apply_alignment
    from pipeline.reconstruction.fsc import fsc, resolution_at
    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.symmetry import asymmetric_grid

    backend.use("cpu", args.threads)
    particles = load_particles(args.run / "input_particles.star")
    ws = refine.build_workspace(
        particles.images, particles.ctf_params, particles.pixel_size_A, args.symmetry
    )
    box, pix = ws.box, ws.pixel_size_A
    truth_raw, truth_pix = read_mrc(args.truth)
    truth = fit_truth(truth_raw, truth_pix, box, pix)
    abinitio, _ = read_mrc(args.run / "abinitio.mrc")

    def against_truth(volume: np.ndarray) -> tuple[float, bool]:
        alignment = align_maps(volume, truth, pix)
        curve = fsc(apply_alignment(volume, alignment), truth)
        return resolution_at(curve, box, pix, 0.5), bool(alignment.flipped)

    starts = {}
    if not args.no_truth_starts:
        starts["truth"] = truth
        starts["truth inverted"] = inverted(truth)
        starts["50/50 hand mixture"] = 0.5 * (truth + inverted(truth))
    starts["ab-initio (run folder)"] = np.asarray(abinitio, np.float32)
    for path in args.start:
        starts[str(path)] = np.asarray(read_mrc(path)[0], np.float32)
    refined = {}
    print(
        "| start (low-passed to 30 Å) | half-map FSC 0.143 (Å) | vs truth FSC 0.5 (Å) "
        "| particles' fit |"
    )
    print("|---|---:|---:|---:|")
    for name, start in starts.items():
        result = refine.refine(ws, start, np.random.default_rng(0), max_iterations=args.iterations)
        volume = result.average_map
        refined[name] = volume
        res, flipped = against_truth(volume)
        hand = " (hand flipped)" if flipped else ""
        fit = refine.particle_fit(ws, result)
        print(f"| {name} | {result.resolution_A:.2f} | {res:.2f}{hand} | {fit:.1f} |", flush=True)

    if not args.scores:
        return
    grid = asymmetric_grid(search.so3_grid(5.0), args.symmetry)
    shifts = search.shift_grid(4.0, 1.0)
    idx = np.arange(ws.n)
    print("\nparticles' mean best whitened score against each refined map (higher: better fit)")
    for res in (20.0, 12.0, 8.0):
        data = ws.search_data(res)
        cells = []
        for name, volume in refined.items():
            fgrid = fourier.pad_fourier(refine.lowpass(volume, res, pix))
            refs = fourier.project(fgrid, grid, ws.plane, data.count)
            _, _, score = search.global_search(refs, data, idx, shifts)
            cells.append(f"{name} {float(np.mean(score)):.1f}")
        print(f"{res:.0f} Å: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
