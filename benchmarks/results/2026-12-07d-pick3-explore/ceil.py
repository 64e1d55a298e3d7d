import sys, json
exec(open('/tmp/p3/dev.py').read().split('if __name__')[0])
from pipeline.picking.blob import pick_blobs
def ceil(name, seed, opts):
    s = [x for x in B.STRUCTURES if x.name == name][0]
    foms, good, nt = [], [], 0
    tol = 0.3 * s.diameter_A / B.PIXEL_A
    for l, im, tr in items(name, seed):
        picks = pick_blobs(im, B.PIXEL_A, s.diameter_A, ctf=tr.ctf, **{**opts, "threshold_sigma": -1e9})
        used = np.zeros(len(tr.coords_px), bool)
        for xy in picks.coords_px:
            d = np.hypot(*(tr.coords_px - xy).T); d[used] = np.inf
            j = int(np.argmin(d)); hit = d[j] < tol; used[j] |= hit; good.append(hit)
        foms += list(picks.fom); nt += len(tr.coords_px)
    o = np.argsort(-np.asarray(foms), kind="stable"); f = np.asarray(foms)[o]
    tp = np.cumsum(np.asarray(good)[o]); n = np.arange(1, len(o)+1); f1 = 2*tp/(n+nt)
    k = int(np.argmax(f1))
    out = f"ceiling F1 {f1[k]:.3f} (P {tp[k]/n[k]:.3f} R {tp[k]/nt:.3f} at {f[k]:.2f})"
    for t in (1.5, 2, 2.5, 3, 4):
        m = (f >= t).sum()
        if m: out += f" | t{t}: P {tp[m-1]/m:.3f} R {tp[m-1]/nt:.3f} F1 {2*tp[m-1]/(m+nt):.3f}"
    return out
opts = json.loads(sys.argv[1])
for n in sys.argv[2].split(","):
    for sd in (0, 1):
        print(n, sd, json.dumps(opts), ceil(n, sd, opts), flush=True)
