"""From particle images to a 3D map: Fourier projection/back-projection, 2D
classification, ab-initio, gold-standard refinement, FSC and sharpening.

Conventions: RELION ZYZ Euler angles (:mod:`pipeline.geometry`), volumes indexed
(z, y, x), images (y, x), lengths in Å unless a name says pixels. All array work
goes through :mod:`pipeline.backend` so ``--device gpu`` runs the same code.
"""
