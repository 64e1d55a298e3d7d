"""Fourier shell correlation and resolution estimates."""

from __future__ import annotations

import numpy as np

from pipeline import backend


def fsc(map1, map2) -> np.ndarray:
    """FSC between two cubic maps per shell of width one Fourier pixel (0..N/2), numpy float64.

    Shell i holds frequencies with round(|k|) == i, k in cycles per box (i / (N·pixel) 1/Å).
    """
    xp, fft = backend.xp(), backend.fft()
    a = backend.asarray(map1, dtype=xp.float32)
    b = backend.asarray(map2, dtype=xp.float32)
    box = a.shape[0]
    fa, fb = fft.rfftn(a), fft.rfftn(b)
    kz = xp.fft.fftfreq(box, 1.0 / box)
    kx = xp.arange(box // 2 + 1)
    r = xp.sqrt(kz[:, None, None] ** 2 + kz[None, :, None] ** 2 + kx[None, None, :] ** 2)
    shells = xp.rint(r).astype(xp.int64).reshape(-1)
    n = box // 2 + 1
    keep = shells < n
    s = shells[keep]

    def shell_sum(values):
        return xp.bincount(s, weights=values.reshape(-1)[keep].astype(xp.float64), minlength=n)

    cross = shell_sum((fa * xp.conj(fb)).real)
    p1 = shell_sum(xp.abs(fa) ** 2)
    p2 = shell_sum(xp.abs(fb) ** 2)
    out = cross / xp.sqrt(xp.maximum(p1 * p2, 1e-30))
    return backend.to_numpy(out)


def shell_frequencies(box: int, pixel_size_A: float) -> np.ndarray:
    """Spatial frequency (1/Å) of each FSC shell."""
    return np.arange(box // 2 + 1) / (box * pixel_size_A)


def resolution_at(
    curve: np.ndarray, box: int, pixel_size_A: float, threshold: float = 0.143
) -> float:
    """Resolution (Å) where ``curve`` first drops below ``threshold`` (linear interpolation).

    Shell 0 is ignored; if the curve never drops, Nyquist (2·pixel) is returned.
    """
    freq = shell_frequencies(box, pixel_size_A)
    c = np.asarray(curve, dtype=float)
    for i in range(1, len(c)):
        if c[i] < threshold:
            if i == 1:
                return float(1.0 / freq[1])
            t = (c[i - 1] - threshold) / max(c[i - 1] - c[i], 1e-12)
            f = freq[i - 1] + t * (freq[i] - freq[i - 1])
            return float(1.0 / f)
    return float(2.0 * pixel_size_A)


def _last_pair_above(curve: np.ndarray, threshold: float) -> int | None:
    """The last shell i ≥ 2 where ``curve`` at i and i − 1 are both at least ``threshold``
    (None when there is none)."""
    above = np.flatnonzero((curve[2:] >= threshold) & (curve[1:-1] >= threshold))
    return int(above[-1] + 2) if above.size else None


def final_resolution_at(
    curve: np.ndarray, box: int, pixel_size_A: float, threshold: float = 0.5
) -> float:
    """Resolution (Å) where ``curve`` falls below ``threshold`` for good: after the last
    pair of neighbouring shells (shell 0 aside) both at least ``threshold``, linearly
    interpolated as :func:`resolution_at`. Equal to :func:`resolution_at` for a curve that
    falls once; a curve that dips under the threshold at a shell where the structure has
    almost no power (apoferritin's hollow-shell minimum near 16 Å) and recovers is read
    at its recovery's end. Nyquist when it never falls; the first shell when no pair is
    above."""
    freq = shell_frequencies(box, pixel_size_A)
    c = np.asarray(curve, dtype=float)
    last = _last_pair_above(c, threshold)
    if last is None:
        return resolution_at(c, box, pixel_size_A, threshold)
    if last == len(c) - 1:
        return float(2.0 * pixel_size_A)
    t = (c[last] - threshold) / max(c[last] - c[last + 1], 1e-12)
    return float(1.0 / (freq[last] + t * (freq[last + 1] - freq[last])))


def phase_randomise(volume, from_shell: int, rng: np.random.Generator):
    """The volume with the phases of every Fourier component beyond shell ``from_shell``
    (cycles per box) replaced by random ones; amplitudes kept (numpy float32)."""
    vol = np.asarray(backend.to_numpy(volume), dtype=np.float32)
    box = vol.shape[0]
    f = np.fft.rfftn(vol)
    kz = np.fft.fftfreq(box, 1.0 / box)
    kx = np.arange(box // 2 + 1)
    r = np.sqrt(kz[:, None, None] ** 2 + kz[None, :, None] ** 2 + kx[None, None, :] ** 2)
    beyond = np.rint(r) > from_shell
    phases = np.exp(2j * np.pi * rng.random(f.shape))
    f = np.where(beyond, f * phases, f)
    return np.fft.irfftn(f, s=vol.shape, axes=(0, 1, 2)).astype(np.float32)


def randomisation_shell(unmasked: np.ndarray, randomise_below: float = 0.8) -> int:
    """The shell (cycles per box) beyond which phases are randomised: the first shell after
    the last one (shell 0 aside) whose unmasked FSC is at least ``randomise_below``.

    RELION takes the first shell below it; a curve that dips at low resolution and comes
    back (halves that differ at 60 Å, a form-factor minimum) then randomises nearly the
    whole map, and beyond it the masked maps' low-resolution power, spread by the mask,
    makes FSC_t and FSC_n both near 1 and their ratio meaningless: on the 100,000-particle
    run (BENCHMARKS.md, issue 23) randomisation from 64 Å turned half-maps that agreed to
    8.4 Å (masked) and 8.8 Å (unmasked) into a 23.5 Å claim. With no shell below the
    threshold the last shell is returned (nothing is randomised)."""
    curve = np.asarray(unmasked, dtype=float)
    above = np.flatnonzero(curve[1:] >= randomise_below)
    if not above.size:
        return 1
    return int(min(above[-1] + 2, len(curve) - 1))


def mask_corrected_fsc(
    half1,
    half2,
    mask,
    rng: np.random.Generator,
    randomise_below: float = 0.8,
    shell: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """FSC of masked half-maps corrected for the mask by phase randomisation (Chen et al.
    2013, Ultramicroscopy 135:24; RELION postprocess).

    The half-maps' phases are randomised beyond the shell where their unmasked FSC drops
    below ``randomise_below`` for good (:func:`randomisation_shell`); the randomised maps
    are masked and their FSC (FSC_n) is what the mask alone makes correlate. Beyond that shell FSC_true = (FSC_t − FSC_n) /
    (1 − FSC_n) with FSC_t the masked maps' FSC; ``shell`` sets the randomisation shell
    instead (benchmarks compare rules with it). Returns (FSC_true, FSC_t, unmasked FSC,
    the randomisation shell), curves per shell (cycles per box).
    """
    m = np.asarray(backend.to_numpy(mask), dtype=np.float32)
    h1 = np.asarray(backend.to_numpy(half1), dtype=np.float32)
    h2 = np.asarray(backend.to_numpy(half2), dtype=np.float32)
    unmasked = fsc(h1, h2)
    if shell is None:
        shell = randomisation_shell(unmasked, randomise_below)
    masked = fsc(h1 * m, h2 * m)
    noise = fsc(phase_randomise(h1, shell, rng) * m, phase_randomise(h2, shell, rng) * m)
    corrected = masked.copy()
    beyond = np.arange(len(masked)) > shell + 2  # as RELION postprocess
    denom = np.maximum(1.0 - noise, 1e-6)
    corrected[beyond] = (masked[beyond] - noise[beyond]) / denom[beyond]
    return corrected, masked, unmasked, shell


def fsc_without_spherical_average(map1, map2, fine: int = 8, low_shells: int = 3) -> np.ndarray:
    """FSC (as :func:`fsc`) of what in the two maps depends on orientation: from each map's
    Fourier transform (about the box centre) its average over thin spheres (1/``fine``
    Fourier pixel) is removed first. A map that is only a radial profile (a shell) has
    nothing left. The lowest ``low_shells`` shells (a few voxels, almost all of them
    spherical) read 1."""
    xp = backend.xp()
    box = np.shape(map1)[0]
    kz = xp.fft.fftfreq(box, 1.0 / box)
    kx = xp.arange(box // 2 + 1)
    r = xp.sqrt(kz[:, None, None] ** 2 + kz[None, :, None] ** 2 + kx[None, None, :] ** 2)
    bins = xp.rint(r * fine).astype(xp.int64).reshape(-1)
    n_bins = int(bins.max()) + 1
    counts = xp.maximum(xp.bincount(bins, minlength=n_bins), 1)
    fft = backend.fft()

    def anisotropic(volume):
        # centre voxel at the origin: a radial profile's transform is real and radial
        v = xp.fft.ifftshift(backend.asarray(volume, dtype=xp.float32))
        f = fft.rfftn(v).reshape(-1)
        mean = (
            xp.bincount(bins, weights=f.real, minlength=n_bins)
            + 1j * xp.bincount(bins, weights=f.imag, minlength=n_bins)
        ) / counts
        rest = (f - mean[bins]).reshape(box, box, box // 2 + 1)
        return xp.fft.fftshift(fft.irfftn(rest, s=(box, box, box)))

    curve = fsc(anisotropic(map1), anisotropic(map2))
    curve[:low_shells] = 1.0
    return curve


def last_resolution_at(
    curve: np.ndarray, box: int, pixel_size_A: float, threshold: float = 0.143
) -> float:
    """Resolution (Å) of the last shell where ``curve`` and the shell before it are both at
    least ``threshold`` (a curve that dips and recovers is read at its recovery's end)."""
    freq = shell_frequencies(box, pixel_size_A)
    last = _last_pair_above(np.asarray(curve, dtype=float), threshold)
    return float(1.0 / freq[last if last is not None else 1])
