"""Where do plain ``--diameter`` blob picks that match no particle lie? (issue 21, pick4)

For the mixture of ``bench_picking_mixture.py`` (or a development mixture built the same
way from other assemblies, ``--case``), runs :func:`pipeline.picking.blob.pick_blobs` as
``cryofac pick --diameter D`` does (no CTF, ``shape="any"``), matches picks one-to-one to the
truth (within 0.3 × D, as the benchmark), and classifies every unmatched pick by the
nearest true particle: its kind, its distance (× D) and whether that particle already has a
matched pick ("duplicate" of a found particle vs "off-centre" on a missed one), or on a
contaminant, or on empty ice (no particle within 1.0 × the larger particle's diameter).

``--noise`` also compares, per micrograph, the noise SD the picker estimates for its
summed detection map (sigma clipping with discs of 0.6 × D around peaks; and with 1.0 × D)
with the robust SD of that map on empty ice (> 1.5 × the largest particle from every
particle, off contaminants and borders; carbon-edge micrographs skipped).

Run: ``nice python benchmarks/diagnose_mixture_picks.py [--case heldout|rod1-apo|apo-rod|
shapes-NAME] [--physics realistic] [--seed N] [--workdir DIR] [--options JSON] [--noise]``;
``--case`` heldout is ``bench_picking_mixture.py``'s set, rod1-apo / apo-rod the
development mixtures of ``dev_mixture.py``, shapes-NAME one structure of
``bench_picking_shapes.py`` (its true CTF given, as there). Images are cached in
``--workdir`` as ``.npz``. Diagnosis only: nothing is chosen from the held-out case.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def load_case(case: str, physics: str, seed: int, workdir: Path):
    """List of (image, truth (n, 2), kinds (n,), contaminants (m, 3)), diameter_A, names."""
    import bench_picking_mixture as mix

    if case.startswith("shapes-"):  # one structure of bench_picking_shapes.py (with its CTF)
        import bench_picking_shapes as shapes

        s = next(x for x in shapes.STRUCTURES if x.name == case[len("shapes-") :])
        out = []
        for label, image, truth, _ in shapes.micrographs(s, 2048, seed, physics):
            conts = np.column_stack([truth.contaminant_coords_px, truth.contaminant_radii_px])
            kinds = np.zeros(len(truth.coords_px), int)
            out.append((image, truth.coords_px, kinds, conts, truth.ctf, "carbon" in label))
        return out, s.diameter_A, (s.name,), (s.diameter_A,)
    out = []
    for i in range(len(mix.DEFOCI_A)):
        cache = workdir / f"{case}-{physics}-s{seed}-{i}.npz"
        if cache.exists():
            z = np.load(cache)
            out.append((z["image"], z["truth"], z["kinds"], z["conts"], None, False))
            continue
        if case == "heldout":
            image, truth, conts, n_a, _ = mix.mixture(i, physics, seed)
        else:
            import dev_mixture

            image, truth, conts, n_a, _ = dev_mixture.mixture(case, i, physics, seed)
        kinds = np.r_[np.zeros(n_a, int), np.ones(len(truth) - n_a, int)]
        np.savez(cache, image=image, truth=truth, kinds=kinds, conts=conts)
        out.append((image, truth, kinds, conts, None, False))
    if case == "heldout":
        return out, 150.0, ("elongated", "cap"), (150.0, 200.0)
    import dev_mixture

    spec = dev_mixture.CASES[case]
    return out, spec.user_diameter_A, spec.names, spec.sizes_A


def matched_pairs(picks, truth, tol):
    """Hungarian one-to-one matching within ``tol`` (as match_picks): pick→truth index or -1."""
    from scipy.optimize import linear_sum_assignment

    assign = np.full(len(picks), -1)
    if len(picks) == 0 or len(truth) == 0:
        return assign
    dist = np.linalg.norm(picks[:, None, :] - truth[None, :, :], axis=2)
    allowed = dist < tol
    rows, cols = linear_sum_assignment(np.where(allowed, dist, 1e9))
    ok = allowed[rows, cols]
    assign[rows[ok]] = cols[ok]
    return assign


class NoiseSpy:
    """Keeps the detection map, candidates and binning of the last ``pick_blobs`` call."""

    def __init__(self):
        import pipeline.picking.blob as blob

        self.blob, self.last = blob, {}
        original_noise, original_bin = blob.background_noise, blob.bin_and_flip

        def noise(response, rows, cols, heights, radius, border, **kw):
            self.last["args"] = (response, rows, cols, heights, radius, border, kw)
            self.last["original"] = original_noise
            return original_noise(response, rows, cols, heights, radius, border, **kw)

        def binning(*a, **k):
            binned = original_bin(*a, **k)
            self.last["scale"] = binned.scale_yx
            return binned

        blob.background_noise, blob.bin_and_flip = noise, binning

    def report(self, truth, conts, far_px, d_px) -> str:
        from pipeline.picking.common import robust_stats

        response, rows, cols, heights, radius, border, kw = self.last["args"]
        response = np.asarray(response)
        sy, sx = self.last["scale"]
        yy, xx = np.mgrid[: response.shape[0], : response.shape[1]]
        x, y = (xx + 0.5) * sx, (yy + 0.5) * sy
        empty = np.ones(response.shape, bool)
        for tx, ty in truth:
            empty &= np.hypot(x - tx, y - ty) > 1.5 * far_px
        for cx, cy, r in conts:
            empty &= np.hypot(x - cx, y - cy) > r + far_px
        b = int(0.5 * d_px / sx) + 1
        empty[:b], empty[-b:], empty[:, :b], empty[:, -b:] = False, False, False, False
        if empty.sum() < 500:
            return "noise: too little empty ice to compare"
        _, sd_empty = robust_stats(response[empty])
        _, sd_06 = self.last["original"](response, rows, cols, heights, radius, border, **kw)
        wide = radius / 0.6 * 1.0
        _, sd_10 = self.last["original"](response, rows, cols, heights, wide, border, **kw)
        return (
            f"noise SD estimate / empty-ice SD: mask 0.6 D (the picker) {sd_06 / sd_empty:.2f}, "
            f"mask 1.0 D {sd_10 / sd_empty:.2f} (empty ice {100 * empty.mean():.0f} % of the map)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="heldout")
    parser.add_argument("--physics", default="realistic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pick4-cache"))
    parser.add_argument("--options", default="{}", help="more pick_blobs keywords (JSON)")
    parser.add_argument("--quiet", action="store_true", help="totals only")
    parser.add_argument("--noise", action="store_true", help="noise SD estimate vs empty ice")
    parser.add_argument(
        "--ctf", action="store_true", help="give the picker the true CTF (as `--ctf STAR`)"
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    from pipeline.picking.blob import pick_blobs

    pixel = 1.5
    items, diameter_A, names, sizes_A = load_case(args.case, args.physics, args.seed, args.workdir)
    opts = {"shape": "any", **json.loads(args.options)}
    if isinstance(opts.get("decoy"), dict):  # {"decoy": {...}}: DecoyThreshold fields (pick5)
        from pipeline.picking.blob import DecoyThreshold

        opts["decoy"] = DecoyThreshold(**opts["decoy"])
    d_px = diameter_A / pixel
    tol = 0.3 * d_px
    far = max(sizes_A) / pixel
    totals = {}
    n_picks = n_true = n_match = 0
    fom_true, fom_false = [], []
    if args.noise:
        spy = NoiseSpy()
    for i, (image, truth, kinds, conts, known_ctf, carbon) in enumerate(items):
        ctf = known_ctf
        if args.ctf and ctf is None:
            import bench_picking_mixture as mix

            from pipeline.ctf_model import CTFParams

            df = mix.DEFOCI_A[i]
            ctf = CTFParams(df + 250.0, df - 250.0, 20.0 + 25.0 * i)
        picks = pick_blobs(image, pixel, diameter_A, ctf=ctf, **opts)
        noise_line = spy.report(truth, conts, far, d_px) if args.noise and not carbon else ""
        xy = picks.coords_px
        assign = matched_pairs(xy, truth, tol)
        found = np.zeros(len(truth), bool)
        found[assign[assign >= 0]] = True
        n_picks += len(xy)
        n_true += len(truth)
        n_match += int(found.sum())
        fom_true += picks.fom[assign >= 0].tolist()
        counts = {}
        for p in np.flatnonzero(assign < 0):
            x, y = xy[p]
            fom_false.append(float(picks.fom[p]))
            if len(conts) and np.any(np.hypot(conts[:, 0] - x, conts[:, 1] - y) < conts[:, 2]):
                key = "on contaminant"
            else:
                dist = np.hypot(*(truth - (x, y)).T)
                j = int(np.argmin(dist))
                if dist[j] > far:
                    key = f"empty ice (> {far * pixel:.0f} Å from any particle)"
                else:
                    d = dist[j] / d_px
                    band = "<0.3" if d < 0.3 else "0.3-0.5" if d < 0.5 else "0.5-0.75"
                    band = band if d < 0.75 else "0.75-1.0" if d < 1.0 else ">1.0"
                    state = "found" if found[j] else "missed"
                    key = f"near {names[kinds[j]]} ({state}), dist {band} D"
            counts[key] = counts.get(key, 0) + 1
            totals[key] = totals.get(key, 0) + 1
        if not args.quiet:
            per_kind = ", ".join(
                f"{n} {int((found & (kinds == k)).sum())}/{int((kinds == k).sum())}"
                for k, n in enumerate(names)
            )
            print(
                f"micrograph {i}: {len(xy)} picks, {int(found.sum())}/{len(truth)} found "
                f"({per_kind}); false {int((assign < 0).sum())}: "
                + "; ".join(f"{k}: {v}" for k, v in sorted(counts.items())),
                flush=True,
            )
            if noise_line:
                print(f"   {noise_line}", flush=True)
    p, r = n_match / max(n_picks, 1), n_match / max(n_true, 1)
    print(
        f"== {args.case} ({args.physics}, seed {args.seed}) D {diameter_A:.0f} Å "
        f"options {opts}{' with the true CTF' if args.ctf else ''}: P {p:.3f} R {r:.3f} F1 {2 * p * r / max(p + r, 1e-12):.3f} "
        f"({n_match}/{n_true}, {n_picks} picks)"
    )
    print(f"   false picks {n_picks - n_match} by place:")
    for k, v in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"     {v:4d}  {k}")
    if fom_false:
        q = np.percentile
        print(
            f"   figure of merit: true picks median {q(fom_true, 50):.2f} "
            f"(10 % {q(fom_true, 10):.2f}); false picks median {q(fom_false, 50):.2f} "
            f"(90 % {q(fom_false, 90):.2f})"
        )


if __name__ == "__main__":
    main()
