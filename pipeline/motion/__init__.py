"""Beam-induced motion correction of movies with dose weighting.

- :mod:`pipeline.motion.dose`: Grant & Grigorieff (2015) critical exposure and per-frame weights.
- :mod:`pipeline.motion.align`: iterative full-frame alignment on Fourier-cropped frames.
- :mod:`pipeline.motion.patches`: patch tracking and a smooth local-motion model.
- :mod:`pipeline.motion.correct`: the whole step for one movie (align, shift, weight, sum).

Shift convention inside this package: ``drift_px[f] = (dx, dy)`` is the displacement of the
specimen in frame ``f`` relative to frame 1 (content at (x, y) in frame 1 appears at
(x + dx, y + dy) in frame f). RELION's ``rlnMicrographShiftX/Y`` is ``-drift_px``
(the shift applied to frame f to bring it onto frame 1); see :mod:`pipeline.io.star`.
"""
