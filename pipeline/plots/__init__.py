"""Diagnostic PNGs for pipeline steps (matplotlib, Agg backend, written only with ``--plots``)."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported lazily)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
