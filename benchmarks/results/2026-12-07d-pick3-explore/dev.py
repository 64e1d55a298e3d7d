"""Exploration: cached dev micrographs, variants of pick_blobs, pooled P/R/F1 + ceiling."""
import sys, pickle, json, time, os
from pathlib import Path
sys.path.insert(0, "/work/wt/pick3")
sys.path.insert(0, "/work/wt/pick3/benchmarks")
import numpy as np
import bench_picking_shapes as B
from pipeline import backend
from pipeline.picking.evaluate import match_picks
backend.use("cpu", 2)

def items(name, seed):
    f = Path(f"/tmp/p3/cache_{name}_{seed}.pkl")
    if f.exists():
        return pickle.loads(f.read_bytes())
    s = [x for x in B.STRUCTURES if x.name == name][0]
    out = [(l, im, tr) for l, im, tr, v in B.micrographs(s, 2048, 100_000 * seed, "realistic")]
    f.write_bytes(pickle.dumps(out))
    return out

def run(name, seed, opts, verbose=False):
    from pipeline.picking.blob import pick_blobs
    s = [x for x in B.STRUCTURES if x.name == name][0]
    tot = np.zeros(3); foms=[]; good=[]; nt=0
    for l, im, tr in items(name, seed):
        o = dict(opts)
        picks = pick_blobs(im, B.PIXEL_A, s.diameter_A, ctf=tr.ctf, **o)
        sc = match_picks(picks.coords_px, tr.coords_px, 0.3 * s.diameter_A / B.PIXEL_A)
        tot += (sc.n_picks, sc.n_true, sc.n_matched)
        if verbose: print(f"  {l} P {sc.precision:.3f} R {sc.recall:.3f} ({sc.n_picks} picks)")
    p, r = tot[2]/max(tot[0],1), tot[2]/tot[1]
    f = 2*p*r/max(p+r,1e-9)
    return p, r, f

if __name__ == "__main__":
    opts = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else ["apoferritin", "rod"]
    seeds = [int(x) for x in sys.argv[3].split(",")] if len(sys.argv) > 3 else [0, 1]
    for n in names:
        for sd in seeds:
            t = time.time()
            p, r, f = run(n, sd, opts)
            print(f"{n:12s} seed {sd} {json.dumps(opts)}: P {p:.3f} R {r:.3f} F1 {f:.3f} ({time.time()-t:.0f}s)", flush=True)
