"""CTF estimation of micrographs (CTFFIND4-like, RELION/CTFFIND conventions).

- :mod:`pipeline.ctf_estimate.spectrum`: tile-averaged power spectrum (active backend).
- :mod:`pipeline.ctf_estimate.fit`: joint background/envelope + CTF² 1D search, 2D
  refinement of defocus U, V and astigmatism angle (and optional phase shift), fit
  resolution and figure of merit.

The entry point is :func:`estimate_ctf`.
"""

from pipeline.ctf_estimate.fit import CTFEstimate, CTFEstimateError, estimate_ctf

__all__ = ["CTFEstimate", "CTFEstimateError", "estimate_ctf"]
