"""CPU seconds of ``symmetrise_volume`` (O and C4, box 64) and of one ``scatter`` (256
images × 1,500 pixels into a 128³ grid), with the outputs saved so that two versions of
the code (``PYTHONPATH``) or two thread counts can be compared bit for bit.

    python benchmarks/bench_symmetrise.py OUT.npz THREADS
    python -c "import numpy as np; a, b = np.load('A.npz'), np.load('B.npz'); \
print({k: bool(np.array_equal(a[k], b[k])) for k in a.files})"
"""

import sys
import time

import numpy as np

from pipeline import backend
from pipeline.reconstruction import fourier, symmetry


def main() -> None:
    out, threads = sys.argv[1], int(sys.argv[2])
    backend.use("cpu", threads)
    rng = np.random.default_rng(0)
    vol = rng.standard_normal((64, 64, 64)).astype(np.float32)
    t, w = time.process_time(), time.perf_counter()
    maps = {g: symmetry.symmetrise_volume(vol, g) for g in ("O", "C4")}
    print(
        f"symmetrise O + C4: {time.process_time() - t:.2f} CPU-s, {time.perf_counter() - w:.2f} s"
    )
    coords = rng.uniform(-60, 60, (256, 1500, 3)).astype(np.float32)
    vals = (rng.standard_normal((256, 1500)) + 1j * rng.standard_normal((256, 1500))).astype(
        np.complex64
    )
    wts = rng.uniform(0, 1, (256, 1500)).astype(np.float32)
    t = time.process_time()
    d, wg = fourier.scatter((128,) * 3, coords, vals, wts)
    print(f"scatter: {time.process_time() - t:.2f} CPU-s")
    np.savez(out, O=maps["O"], C4=maps["C4"], d=d, w=wg)


if __name__ == "__main__":
    main()
