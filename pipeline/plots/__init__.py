"""Diagnostic PNGs for pipeline steps (matplotlib, Agg backend, written only with ``--plots``)."""

from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported lazily)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | os.PathLike, dpi: float | None = None) -> Path:
    """Lay out ``fig``, write it to ``path`` (folders made; ``dpi``: the figure's) and close it."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi if dpi is not None else "figure")
    pyplot().close(fig)
    return path
