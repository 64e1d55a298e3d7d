"""Synthetic half-maps with a known answer, for testing resolution claims (issue 22).

:func:`dipping_halves` builds two half-maps of one structure whose unmasked FSC dips at
low resolution and recovers (the halves differ at 50–100 Å, as independently refined
halves can), with a density offset and white noise, and the resolution their masked
signal-to-noise supports — what a mask-corrected FSC (Chen et al. 2013) should claim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.simulate.volume import blob_volume


@dataclass(frozen=True)
class HalfMaps:
    """Two half-maps (float32, box³), the solvent mask made from the noise-free structure,
    and ``reference_A``: where the shells' ratio of masked-signal power to masked-signal
    plus masked-noise power falls to 0.143 (Å)."""

    half1: np.ndarray
    half2: np.ndarray
    mask: np.ndarray
    reference_A: float


def dipping_halves(
    seed: int,
    box: int = 128,
    pixel_size_A: float = 1.5,
    b_factor_A2: float = 200.0,
    noise_sd: float = 3.0,
    low_error: float = 0.6,
    low_shells: tuple[int, int] = (2, 4),
    offset: float = 3.0,
) -> HalfMaps:
    """A 40-blob structure (unit SD after a ``b_factor_A2`` blur) plus, in each half,
    independent white noise of SD ``noise_sd``, an independent error of SD ``low_error``
    confined to Fourier shells ``low_shells`` (cycles per box) and a density ``offset``;
    the mask is :func:`postprocess.soft_mask` of the structure (15 Å low-pass, 0.1 of the
    maximum, 3 Å dilation, 6 Å soft edge)."""
    from pipeline.reconstruction.fsc import resolution_at
    from pipeline.reconstruction.postprocess import soft_mask

    rng = np.random.default_rng(seed)
    signal = blob_volume(box, rng, 40, (2.0, 5.0)).astype(np.float64)
    k = np.meshgrid(*[np.fft.fftfreq(box)] * 3, indexing="ij")
    radius = np.sqrt(sum(g**2 for g in k))  # cycles per pixel
    blur = np.exp(-b_factor_A2 / 4.0 * (radius / pixel_size_A) ** 2)
    signal = np.fft.ifftn(np.fft.fftn(signal) * blur).real
    signal /= signal.std()
    shell = np.rint(radius * box).astype(int)
    band = (shell >= low_shells[0]) & (shell <= low_shells[1])

    def half() -> tuple[np.ndarray, np.ndarray]:
        low = np.fft.ifftn(np.fft.fftn(rng.normal(size=signal.shape)) * band).real
        noise = noise_sd * rng.normal(size=signal.shape)
        volume = signal + noise + low_error * low / low.std() + offset
        return volume.astype(np.float32), noise

    (half1, noise), (half2, _) = half(), half()
    mask = soft_mask(signal, pixel_size_A, 15.0, 0.1, 3.0, 6.0)
    n = box // 2 + 1
    keep = shell < n

    def power(volume: np.ndarray) -> np.ndarray:
        f = np.abs(np.fft.fftn(mask * volume)) ** 2
        return np.bincount(shell[keep], f[keep], n)

    s, p = power(signal), power(noise)
    reference = resolution_at(s / (s + p), box, pixel_size_A, 0.143)
    return HalfMaps(half1, half2, mask, float(reference))
