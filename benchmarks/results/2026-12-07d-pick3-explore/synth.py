import sys, json, numpy as np
sys.path.insert(0, "/work/wt/pick3/tests/pipeline/picking")
import synthetic as S
from pipeline.picking.blob import pick_blobs
from pipeline.picking.evaluate import match_picks
def synth(opts):
    out=[]
    for seed, df in [(0, 10000.0), (1, 25000.0), (2, 15000.0)]:
        image, truth = S.field(1024, 40, seed, n_contaminants=2, diameter_A=120.0, defocus_A=df)
        p = pick_blobs(image, 2.0, 120.0, ctf=truth.ctf, **opts)
        sc = match_picks(p.coords_px, truth.coords_px, 18.0)
        out.append(f"P {sc.precision:.2f} R {sc.recall:.2f}")
    return "; ".join(out)
