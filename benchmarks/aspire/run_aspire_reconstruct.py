"""ASPIRE ab-initio on a RELION particle stack (runs in ASPIRE's OWN venv, not the project's).

    .venv-aspire/bin/python benchmarks/aspire/run_aspire_reconstruct.py particles.star \
        --downsample 48 --n-classes 300 --n-nbor 16 --out aspire_map.mrc --timings t.json

ASPIRE's documented ab-initio pipeline (its "Abinitio Pipeline - Experimental Data" gallery
example): RelionSource → phase flip → downsample to ``--downsample`` pixels → normalise
background → whiten → invert contrast (protein dark → bright) → class averages
(LegacyClassAvgSource: RIR classification, ``--n-nbor`` neighbours per average, a random
selection of ``--n-classes`` averages) → common lines with synchronisation voting
(CLSyncVoting, C1) on the averages → MeanEstimator (least-squares mean volume) with those
orientations. ``--raw`` skips class averaging and runs common lines and the mean estimator
on the first ``--n-classes`` preprocessed particles (with their CTFs) instead.

The map is written at the downsampled box with the downsampled pixel size. Stage timings
(wall and CPU seconds) go to ``--timings`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import time


class Stages:
    """Wall/CPU seconds per named stage."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = {}

    def start(self) -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def stop(self, name: str, mark: tuple[float, float]) -> None:
        self.rows[name] = {
            "wall_s": time.perf_counter() - mark[0],
            "cpu_s": time.process_time() - mark[1],
        }
        print(f"{name}: {self.rows[name]['wall_s']:.1f} s wall", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("star")
    parser.add_argument("--downsample", type=int, default=48, help="box after binning (px)")
    parser.add_argument("--n-classes", type=int, default=300)
    parser.add_argument("--n-nbor", type=int, default=16)
    parser.add_argument("--raw", action="store_true", help="no class averaging")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--timings", required=True)
    args = parser.parse_args()

    import aspire
    from aspire.abinitio import CLSyncVoting
    from aspire.classification import RandomClassSelector
    from aspire.denoising import LegacyClassAvgSource
    from aspire.reconstruction import MeanEstimator
    from aspire.source import OrientedSource, RelionSource

    stages = Stages()
    mark = stages.start()
    src = RelionSource(args.star)
    src = src.phase_flip().cache()
    src = src.downsample(args.downsample).cache()
    src = src.normalize_background().cache()
    src = src.whiten().cache()
    src = src.invert_contrast().cache()
    stages.stop("preprocess", mark)

    mark = stages.start()
    if args.raw:
        avgs = src[: args.n_classes]
    else:
        avgs = LegacyClassAvgSource(
            src, n_nbor=args.n_nbor, class_selector=RandomClassSelector(seed=args.seed)
        )
        avgs = avgs[: args.n_classes].cache()
    stages.stop("class_averages", mark)

    mark = stages.start()
    oriented = OrientedSource(avgs, CLSyncVoting(avgs, n_theta=360))
    oriented.rotations  # noqa: B018 — forces the (lazy) orientation estimation here
    stages.stop("common_lines", mark)

    mark = stages.start()
    volume = MeanEstimator(oriented).estimate()
    stages.stop("mean_estimation", mark)
    volume.save(args.out, overwrite=True)

    with open(args.timings, "w") as handle:
        json.dump(
            {
                "aspire_version": aspire.__version__,
                "stages": stages.rows,
                "n_images": src.n,
                "n_used": avgs.n,
                "downsample_px": args.downsample,
                "pixel_size_A": float(volume.pixel_size),
                "raw": args.raw,
            },
            handle,
        )


if __name__ == "__main__":
    main()
