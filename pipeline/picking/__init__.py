"""Particle picking: blob (LoG) and template (normalised cross-correlation) pickers.

Coordinates are (x, y) = (column, row) in pixels of the micrograph as stored.
"""

from pipeline.picking.common import Picks

__all__ = ["Picks"]
