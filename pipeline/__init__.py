"""cryofac's image-processing library.

A pure library: arrays and files in, arrays and files out; no Flask, no database,
no global state beyond the array backend chosen once (:mod:`pipeline.backend`).
Units are stated in every public signature: Å for lengths, e/Å² for dose,
kV, mm for Cs, degrees for angles, pixels where a name ends in ``_px``.
"""
