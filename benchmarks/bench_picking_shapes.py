"""Picking benchmark on four particle shapes (issue 21): precision, recall, F1, time.

Run: ``nice python benchmarks/bench_picking_shapes.py [--structures all|dev|held-out]
[--methods blob,template,classes,classes_c,...] [--physics hard|realistic] [--threads 2]
[--size 2048] [--seed N] [--json FILE]``; ``--speed`` times
4096² micrographs instead; ``--ceiling`` reports the best F1 a threshold could reach
(chosen with the truth: a diagnosis of whether particles stand out of the score's noise).

Structures (:mod:`pipeline.simulate.assemblies`, built from the shipped 6Z6U subunits, no
other PDB entries are reachable here): ``apoferritin`` and ``rod`` were used while
developing (constants chosen on them); ``pentamer`` (~90 kDa) and ``cap`` (~400 kDa, C1)
are held out and reported separately. Per structure: 6 micrographs (``--size``² at 1.5 Å/px,
40 e/Å², 300 kV) at defocus 1.0, 1.8 and 2.6 µm × ice 300 and 700 Å; the 1.8 µm pair has a
carbon edge, the 2.6 µm pair a ±25 % ice gradient, every one 2 contaminants. The picker is
given what a user knows: a diameter and a min–max range (blob), or the map (template, 50
views over the sphere, the micrograph's CTF). Picks match the truth one-to-one within
0.3 × diameter (:func:`pipeline.picking.evaluate.match_picks`).

``--physics realistic`` (2026-12-07b): each particle displaces its partial specific volume
of ice (the default 1 V envelope is 1.4–1.5× too big and halves the particle's
low-resolution contrast) in ice of 250 and 450 Å; ``hard`` is the set recorded before.
Methods ``classes*`` are the cryoSPARC Live loop without truth: blob picks → 2D classes →
template picking with the kept class averages (:func:`class_templates`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PIXEL_A = 1.5


@dataclass(frozen=True)
class Structure:
    name: str
    box: int  # map box at PIXEL_A
    diameter_A: float  # what a user would type: the longest dimension (as cryoSPARC's)
    min_A: float
    max_A: float
    n_particles: int  # per 2048² micrograph
    held_out: bool


STRUCTURES = [
    Structure("apoferritin", 100, 130.0, 120.0, 140.0, 110, False),
    Structure("rod", 160, 220.0, 60.0, 220.0, 70, False),
    Structure("pentamer", 96, 115.0, 60.0, 115.0, 150, True),
    Structure("cap", 150, 200.0, 130.0, 200.0, 60, True),
]
DEFOCI_A = (10000.0, 18000.0, 26000.0)
ICE_A = (300.0, 700.0)
#: ``--physics``: "hard" is the set as recorded since 2026-12-06 (1 V solvent envelope, ice
#: 300/700 Å); "realistic" displaces the protein's partial specific volume of ice (the 1 V
#: envelope is 1.4–1.5× too big and halves the low-resolution contrast, see
#: :func:`pipeline.simulate.micrograph.solvent_envelope`) in ice of 250/450 Å.
PHYSICS = {"hard": ICE_A, "realistic": (250.0, 450.0)}


def excluded_volume_A3(name: str) -> float:
    """Partial specific volume (Å³) of assembly ``name``, hydrogens counted as 7 % of mass."""
    from pipeline.simulate.assemblies import assembly_mass_kDa
    from pipeline.simulate.micrograph import protein_volume_A3

    return protein_volume_A3(assembly_mass_kDa(name) / 0.93)


def micrographs(structure: Structure, size: int, seed0: int = 0, physics: str = "hard"):
    """Yield (label, image, truth) for the 6 conditions of ``structure``."""
    from pipeline.ctf_model import CTFParams
    from pipeline.simulate.assemblies import assembly_volume
    from pipeline.simulate.micrograph import simulate_micrograph

    volume = assembly_volume(structure.name, structure.box, PIXEL_A)
    n = int(round(structure.n_particles * (size / 2048) ** 2))
    excluded = excluded_volume_A3(structure.name) if physics == "realistic" else None
    for i, defocus in enumerate(DEFOCI_A):
        for j, ice in enumerate(PHYSICS[physics]):
            seed = seed0 + 1000 * STRUCTURES.index(structure) + 10 * i + j
            ctf = CTFParams(defocus + 200.0, defocus - 200.0, 30.0 + 40 * j)
            image, truth = simulate_micrograph(
                volume,
                (size, size),
                PIXEL_A,
                n_particles=n,
                ctf=ctf,
                dose_e_A2=40.0,
                n_contaminants=2,
                ice_thickness_A=ice,
                carbon_edge=i == 1,
                ice_gradient=0.25 if i == 2 else 0.0,
                rng=seed,
                excluded_volume_A3=excluded,
            )
            label = f"df{defocus / 1e4:.1f}_ice{ice:.0f}" + (
                "_carbon" if i == 1 else "_gradient" if i == 2 else ""
            )
            yield label, image, truth, volume


def pick(
    method: str, structure: Structure, image, truth, volume, views: int, classes=None, **options
):
    from pipeline.picking.blob import pick_blobs
    from pipeline.picking.template import pick_templates, templates_from_map

    if method == "blob":
        given = BLOB_RANGE == "given"
        return pick_blobs(
            image,
            PIXEL_A,
            structure.diameter_A,
            min_diameter_A=structure.min_A if given else None,
            max_diameter_A=structure.max_A if given else None,
            ctf=truth.ctf,
            **{**BLOB_OPTIONS, **options},
        )
    if method in CLASS_LOOPS:
        templates, template_px = classes
        return pick_templates(
            image, PIXEL_A, structure.diameter_A, templates, template_px, ctf=truth.ctf, **options
        )
    templates = _TEMPLATES.setdefault(
        (structure.name, views), templates_from_map(volume, PIXEL_A, views)
    )
    return pick_templates(
        image, PIXEL_A, structure.diameter_A, templates, PIXEL_A, ctf=truth.ctf, **options
    )


#: methods that pick with 2D class averages of the blob picks (:func:`class_templates`):
#: one round as classified, or two rounds with averages centred on their mass
#: ("_c": classes whose mass is off-centre by > 0.25 × the particle radius are dropped)
CLASS_LOOPS = {
    "classes": {},
    "classes2": {"rounds": 2, "recentre": 1},
    "classes_c": {"max_offset": 0.25},
    "classes2_c": {"rounds": 2, "max_offset": 0.25},
}


def class_templates(
    structure: Structure,
    items: list,
    n_classes: int,
    seed: int,
    keep: float = 0.0,
    recentre: float = 0.0,
    rounds: float = 1,
    max_offset: float = 0.0,
):
    """2D class averages of the blob picks of ``items``, the classes 2D classification keeps.

    The cryoSPARC Live loop without any truth: blob picks (:func:`pick`) → boxes of
    1.5 × diameter binned to ~diameter/32 Å/px (background-normalised, contrast as
    recorded: the reconstruction's image model) →
    :func:`pipeline.reconstruction.class2d.classify_2d` (``n_classes``, 8 iterations at
    diameter/8 Å) → the selected averages (the house rule, FRC score ≥ 0.3, and with
    ``keep`` > 0 also score ≥ ``keep`` × the best score), moved so that their centre of
    mass is at the centre when ``recentre``; with ``max_offset`` > 0 classes whose centre
    of mass is further than ``max_offset`` × the particle radius from the centre are dropped
    (averages of picks between particles: their density is a neighbour's); with ``rounds``
    = 2 the picks made with those templates are classified again. Returns (templates, pixel size in Å, message).
    """
    import numpy as np

    from pipeline.extraction import extract_particles
    from pipeline.reconstruction.class2d import classify_2d
    from pipeline.reconstruction.workspace import build_workspace

    box = 2 * int(round(0.75 * structure.diameter_A / PIXEL_A))
    target_px = max(PIXEL_A, structure.diameter_A / 32.0)
    bin_factor = target_px / PIXEL_A
    templates = None
    messages = []
    for _ in range(int(rounds)):
        stacks, ctfs = [], []
        for _, image, truth, volume in items:
            if templates is None:
                picks = pick("blob", structure, image, truth, volume, 0)
            else:
                picks = pick("classes", structure, image, truth, volume, 0, templates)
            ex = extract_particles(
                image,
                picks.coords_px,
                box,
                PIXEL_A,
                bin_factor=bin_factor,
                mask_diameter_px=1.1 * structure.diameter_A * ex_px(box, bin_factor),
                invert=False,
            )
            stacks.append(ex.images)
            ctfs += [truth.ctf] * len(ex.kept)
        images = np.concatenate(stacks)
        px = PIXEL_A * box / images.shape[-1]
        ws = build_workspace(images, ctfs, px)
        result = classify_2d(
            ws,
            n_classes,
            np.random.default_rng(seed),
            n_iterations=8,
            resolution_A=max(structure.diameter_A / 8.0, 2.2 * px),
        )
        chosen = result.selected & (result.scores >= keep * result.scores.max())
        if max_offset:
            radius_px = 0.5 * structure.diameter_A / px
            offsets = mass_offsets_px(np.asarray(result.averages))
            chosen &= offsets <= max_offset * radius_px
            if not chosen.any():  # never none: the best-centred selected class
                chosen[int(np.argmin(np.where(result.selected, offsets, np.inf)))] = True
        averages = np.asarray(result.averages)[chosen]
        if recentre:
            averages = centred(averages)
        templates = (averages, px)
        messages.append(
            f"classes from {len(images)} picks: {int(chosen.sum())}/{n_classes} kept "
            f"(counts {result.counts.tolist()}, scores {np.round(result.scores, 2).tolist()})"
        )
    return templates[0], templates[1], "; ".join(messages)


def mass_offsets_px(averages):
    """Distance (px) of each average's centre of mass (positive part, disc of 0.45 × box)
    from pixel box//2."""
    import numpy as np

    n = averages.shape[-1]
    yy, xx = np.mgrid[:n, :n] - n // 2
    w = np.clip(averages, 0, None) * (np.hypot(yy, xx) < 0.45 * n)
    total = np.maximum(w.sum(axis=(1, 2)), 1e-12)
    return np.hypot((w * yy).sum(axis=(1, 2)) / total, (w * xx).sum(axis=(1, 2)) / total)


def centred(averages):
    """Each average shifted (Fourier, sub-pixel) so that the centre of mass of its positive
    part, inside a disc of 0.45 × box, sits on pixel box//2."""
    import numpy as np

    n = averages.shape[-1]
    yy, xx = np.mgrid[:n, :n] - n // 2
    disc = np.hypot(yy, xx) < 0.45 * n
    k = np.fft.fftfreq(n)
    out = []
    for a in averages:
        w = np.clip(a, 0, None) * disc
        dy, dx = (w * yy).sum() / max(w.sum(), 1e-12), (w * xx).sum() / max(w.sum(), 1e-12)
        phase = np.exp(2j * np.pi * (k[:, None] * dy + k[None, :] * dx))
        out.append(np.real(np.fft.ifft2(np.fft.fft2(a) * phase)).astype(np.float32))
    return np.stack(out)


def ex_px(box: int, bin_factor: float) -> float:
    """1 / (pixel size in Å of a ``box`` binned by ``bin_factor``)."""
    from pipeline.extraction import binned_box

    return binned_box(box, bin_factor) / (box * PIXEL_A)


def ceiling(
    structure: Structure, method: str, size: int, views: int, seed0: int, physics: str = "hard"
) -> None:
    """The best pooled F1 any global threshold on the picker's own score could reach.

    Every peak is kept (threshold −∞, the screens still apply) and labelled with the truth
    (best first, each true centre matched once within 0.3 × diameter); the threshold that
    maximises the pooled F1 over the 6 micrographs is then found *with* the truth. A low
    ceiling means the particles do not stand out of the score map's noise (no threshold
    rule can fix that); a ceiling far above the benchmark's F1 means the threshold is wrong.
    """
    import numpy as np

    foms, good, n_true = [], [], 0
    for _, image, truth, volume in micrographs(structure, size, seed0, physics):
        picks = pick(method, structure, image, truth, volume, views, threshold_sigma=-1e9)
        tol = 0.3 * structure.diameter_A / PIXEL_A
        used = np.zeros(len(truth.coords_px), dtype=bool)
        for xy in picks.coords_px:
            d = np.hypot(*(truth.coords_px - xy).T)
            d[used] = np.inf
            j = int(np.argmin(d)) if len(d) else -1
            hit = j >= 0 and d[j] < tol
            used[j] |= hit
            good.append(hit)
        foms += list(picks.fom)
        n_true += len(truth.coords_px)
    order = np.argsort(-np.asarray(foms), kind="stable")
    tp = np.cumsum(np.asarray(good)[order])
    n = np.arange(1, len(order) + 1)
    f1 = 2 * tp / (n + n_true)
    k = int(np.argmax(f1))
    print(
        f"== {structure.name} {method} ceiling (threshold chosen with the truth): F1 "
        f"{f1[k]:.3f} (P {tp[k] / n[k]:.3f} R {tp[k] / n_true:.3f} at score "
        f"{np.asarray(foms)[order][k]:.2f}; {len(order)} peaks, {n_true} true)",
        flush=True,
    )


_TEMPLATES: dict = {}
#: ``--blob-range``: "given" passes each structure's min–max range (as recorded before
#: 2026-12-07d); "none" passes only the diameter, as plain ``cryofac pick --diameter D``
BLOB_RANGE = "given"
#: ``--blob-options``: more keyword arguments of :func:`pick_blobs` (JSON)
BLOB_OPTIONS: dict = {}


def speed(threads: int, views: int, repeats: int = 2) -> None:
    """Wall and CPU seconds per 4096² micrograph (1 Å/px, apoferritin, 130 Å): blob picking
    and template picking with ``views`` projections (templates made once, outside the timing,
    as the CLI does for a whole batch)."""
    from pipeline.ctf_model import CTFParams
    from pipeline.picking.blob import DecoyThreshold, pick_blobs
    from pipeline.picking.template import pick_templates, templates_from_map
    from pipeline.simulate.micrograph import simulate_micrograph
    from pipeline.simulate.volume import reference_volume

    volume = reference_volume(160, 1.0)
    ctf = CTFParams(17250.0, 16750.0, 40.0)
    image, truth = simulate_micrograph(
        volume, (4096, 4096), 1.0, n_particles=400, ctf=ctf, n_contaminants=3, rng=7
    )
    templates = templates_from_map(volume, 1.0, views)
    jobs = {
        "blob": lambda: pick_blobs(image, 1.0, 130.0, ctf=ctf),
        # plain `cryofac pick --diameter 130` since 2026-12-07d: shape "any"
        "blob, any shape": lambda: pick_blobs(image, 1.0, 130.0, ctf=ctf, shape="any"),
        # `--false-pick-rate 0.05` (pick5): the filters also run on the inverted micrograph
        "blob, any shape, decoy threshold": lambda: pick_blobs(
            image, 1.0, 130.0, ctf=ctf, shape="any", decoy=DecoyThreshold()
        ),
        # the elongated kernel bank (a rod's range, 3 lengths × 12 axis angles): time only
        "blob, elongated 60-220 Å": lambda: pick_blobs(
            image, 1.0, 220.0, min_diameter_A=60.0, max_diameter_A=220.0, ctf=ctf
        ),
        f"template, {views} views": lambda: pick_templates(
            image, 1.0, 130.0, templates, 1.0, ctf=ctf
        ),
    }
    from pipeline.picking.evaluate import match_picks

    for name, job in jobs.items():
        job()  # warm-up (FFT plans, caches)
        for _ in range(repeats):
            load = os.getloadavg()[0]
            wall, cpu = time.perf_counter(), time.process_time()
            picks = job()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            score = match_picks(picks.coords_px, truth.coords_px, 0.3 * 130.0)
            if name.startswith("blob, elongated"):
                print(
                    f"speed 4096² {name}: wall {wall:.2f} s, CPU {cpu:.2f} s ({threads} "
                    f"threads), load {load:.1f}",
                    flush=True,
                )
                continue
            print(
                f"speed 4096² {name}: wall {wall:.2f} s, CPU {cpu:.2f} s ({threads} threads), "
                f"load {load:.1f}; P {score.precision:.3f} R {score.recall:.3f}",
                flush=True,
            )


ROW_FIELDS = ("structure", "held_out", "micrograph", "method", "n_true", "n_picks")
ROW_FIELDS += ("precision", "recall", "f1", "seconds", "load")


def record(rows: list, totals: dict, structure, label: str, method: str, score, seconds: float):
    """Add one micrograph's score to ``rows`` and the pooled ``totals``; print it."""
    t = totals[method]
    t[0] += score.n_picks
    t[1] += score.n_true
    t[2] += score.n_matched
    t[3] += seconds
    load = os.getloadavg()[0]
    values = (structure.name, structure.held_out, label, method, score.n_true, score.n_picks)
    values += (score.precision, score.recall, score.f1, seconds, load)
    rows.append(dict(zip(ROW_FIELDS, values, strict=True)))
    print(
        f"{structure.name:12s} {label:24s} {method:8s} P {score.precision:.3f} "
        f"R {score.recall:.3f} F1 {score.f1:.3f} ({score.n_matched}/{score.n_true}, "
        f"{score.n_picks} picks) {seconds:.2f} s load {load:.1f}",
        flush=True,
    )


def summarise(structure, totals: dict) -> None:
    """Print the pooled precision, recall, F1 and time of each method on ``structure``."""
    for method, (n_p, n_t, n_m, secs) in totals.items():
        p = n_m / n_p if n_p else 0.0
        r = n_m / n_t if n_t else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        print(
            f"== {structure.name} {method}: P {p:.3f} R {r:.3f} F1 {f:.3f} ({secs:.1f} s)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", default="all")
    parser.add_argument(
        "--methods", default="blob,template", help="of blob, template, classes, classes2"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--views", type=int, default=50)
    parser.add_argument(
        "--seed", type=int, default=0, help="simulation seed offset (sweep 0, 1, 2, ...)"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--physics", choices=sorted(PHYSICS), default="hard")
    parser.add_argument("--classes", type=int, default=12, help="2D classes (method classes)")
    parser.add_argument("--speed", action="store_true", help="time 4096² micrographs only")
    parser.add_argument(
        "--blob-range",
        choices=("given", "none"),
        default="given",
        help="blob: pass the structure's min-max range, or only the diameter (plain CLI)",
    )
    parser.add_argument(
        "--blob-options", default="{}", help="blob: more pick_blobs keyword arguments (JSON)"
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="the best F1 a global threshold could reach, chosen with the truth (diagnosis)",
    )
    args = parser.parse_args()

    from pipeline import backend
    from pipeline.picking.evaluate import match_picks

    backend.use("cpu", args.threads)
    global BLOB_RANGE, BLOB_OPTIONS
    BLOB_RANGE, BLOB_OPTIONS = args.blob_range, json.loads(args.blob_options)
    if isinstance(BLOB_OPTIONS.get("decoy"), dict):  # {"decoy": {...}}: DecoyThreshold fields
        from pipeline.picking.blob import DecoyThreshold

        BLOB_OPTIONS["decoy"] = DecoyThreshold(**BLOB_OPTIONS["decoy"])
    if args.speed:
        speed(args.threads, args.views)
        return
    if args.structures == "dev":
        chosen = [s for s in STRUCTURES if not s.held_out]
    elif args.structures == "held-out":
        chosen = [s for s in STRUCTURES if s.held_out]
    elif args.structures == "all":
        chosen = STRUCTURES
    else:
        chosen = [s for s in STRUCTURES if s.name in args.structures.split(",")]
    methods = args.methods.split(",")
    if args.ceiling:
        for structure in chosen:
            for method in methods:
                ceiling(structure, method, args.size, args.views, 100_000 * args.seed, args.physics)
        return
    rows = []
    print(
        f"# {platform.node()} {os.cpu_count()} CPUs, load {os.getloadavg()}, physics "
        f"{args.physics}, seed {args.seed}, blob range {args.blob_range}, blob options "
        f"{args.blob_options}",
        flush=True,
    )
    for structure in chosen:
        totals = {m: [0, 0, 0, 0.0] for m in methods}
        items = list(micrographs(structure, args.size, 100_000 * args.seed, args.physics))
        classes = {}
        for method in [m for m in methods if m in CLASS_LOOPS]:
            start = time.perf_counter()
            averages, px, message = class_templates(
                structure, items, args.classes, 17 + args.seed, **CLASS_LOOPS[method]
            )
            classes[method] = (averages, px)
            print(
                f"{structure.name} {method}: {message}, {time.perf_counter() - start:.1f} s",
                flush=True,
            )
        for label, image, truth, volume in items:
            for method in methods:
                start = time.perf_counter()
                picks = pick(
                    method, structure, image, truth, volume, args.views, classes.get(method)
                )
                seconds = time.perf_counter() - start
                score = match_picks(
                    picks.coords_px, truth.coords_px, 0.3 * structure.diameter_A / PIXEL_A
                )
                record(rows, totals, structure, label, method, score, seconds)
        summarise(structure, totals)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
