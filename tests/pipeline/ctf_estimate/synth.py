"""Synthetic micrographs with a known CTF for CTF-estimation tests.

Weak-phase specimen (white "ice" noise plus smooth blobs), imaged with the CTF of
:mod:`pipeline.ctf_model` and a B-factor envelope, Poisson counts at ``dose_e_A2``, plus
a falling detector-like noise background so the background is not flat.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from pipeline.ctf_model import CTFParams, ctf_2d


def synthetic_micrograph(
    ctf: CTFParams,
    shape=(1024, 1024),
    pixel_size_A=1.0,
    dose_e_A2=40.0,
    contrast=0.2,
    seed=0,
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    phase = rng.normal(size=shape)
    blobs = np.zeros(shape)
    n = shape[0] * shape[1] // 4000
    blobs[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = 1.0
    phase += ndimage.gaussian_filter(blobs, 40.0 / pixel_size_A) * 300
    spec = sfft.rfft2(phase) * ctf_2d(shape, pixel_size_A, ctf, rfft=True)
    image = sfft.irfft2(spec, s=shape)
    expected = dose_e_A2 * pixel_size_A**2 * (1.0 + contrast * image / image.std())
    counts = rng.poisson(np.clip(expected, 0, None)).astype(np.float64)
    # correlated detector noise: power falling with frequency
    noise = ndimage.gaussian_filter(rng.normal(size=shape), 1.0) * 2.0 * np.sqrt(expected.mean())
    return (counts + noise).astype(np.float32)
