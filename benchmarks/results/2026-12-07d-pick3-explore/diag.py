import sys, json; sys.argv=sys.argv
exec(open('/tmp/p3/dev.py').read().split('if __name__')[0])
from pipeline.picking.blob import pick_blobs
from scipy.spatial import cKDTree
name, seed = sys.argv[1], int(sys.argv[2]); opts = json.loads(sys.argv[3])
s = [x for x in B.STRUCTURES if x.name == name][0]
D = s.diameter_A / B.PIXEL_A
for l, im, tr in items(name, seed):
    picks = pick_blobs(im, B.PIXEL_A, s.diameter_A, ctf=tr.ctf, **opts)
    sc = match_picks(picks.coords_px, tr.coords_px, 0.3 * D)
    d, j = cKDTree(tr.coords_px).query(picks.coords_px)
    # greedy one-to-one as match_picks: approximate by classifying by nearest distance
    bins = np.histogram(d / D, bins=[0, 0.3, 0.5, 0.75, 1.0, 1.5, 99])[0]
    # true without a pick within 0.3D: nearest pick distance
    dd, _ = cKDTree(picks.coords_px).query(tr.coords_px) if len(picks.coords_px) else (np.full(len(tr.coords_px), 99.), None)
    mb = np.histogram(dd / D, bins=[0, 0.3, 0.5, 0.75, 1.0, 99])[0]
    # duplicates: picks sharing nearest truth within 0.75 D
    near = j[d < 0.75 * D]; dup = len(near) - len(set(near.tolist()))
    print(f"{l:24s} P {sc.precision:.3f} R {sc.recall:.3f} picks by dist/D to nearest true [0,.3,.5,.75,1,1.5,inf): {bins.tolist()} dup {dup}; true by dist to nearest pick [0,.3,.5,.75,1,inf): {mb.tolist()}; rej {[(k, len(v)) for k, v in picks.rejected.items()]}")
    for k, v in picks.rejected.items():
        if len(v):
            dv, _ = cKDTree(tr.coords_px).query(v)
            print(f"    rejected {k}: {len(v)}, within 0.3D of a truth: {(dv < 0.3 * D).sum()}")
