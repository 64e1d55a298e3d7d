"""Plots for the live run page, rendered with matplotlib (Agg) to SVG or PNG bytes.

Every plot is a pure function of a :class:`~portal.runs.folder.RunFolder` (or of an
output file); :func:`render` caches the bytes keyed by the run folder, the plot name
and the modification time of the files it depends on, so a page refreshed every few
seconds re-renders only when the workflow has written something new.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from portal.runs.folder import (
    MovieStats,
    RunFolder,
    RunFolderError,
    fsc_resolution_A,
    read_classes2d,
    read_fsc,
)


@dataclass(frozen=True)
class MetricSpec:
    """A per-movie quantity: label with unit, accessor, scale for display."""

    label: str
    get: Callable[[MovieStats], float | None]
    scale: float = 1.0


#: Per-movie metrics plotted over time and as histograms (units in the labels).
METRICS: dict[str, MetricSpec] = {
    "drift": MetricSpec("Total motion (Å)", lambda m: m.total_motion_A),
    "defocus": MetricSpec("Defocus (µm)", lambda m: m.defocus_mean_A, 1e-4),
    "astigmatism": MetricSpec("Astigmatism (Å)", lambda m: m.astigmatism_A),
    "ctf_resolution": MetricSpec("CTF fit resolution (Å)", lambda m: m.ctf_max_resolution_A),
    "particles": MetricSpec("Particles per micrograph", lambda m: m.n_particles),
}

ACCENT = "#1f5f99"
WARN = "#c2410c"


def _figure(width_in: float = 4.6, height_in: float = 2.6):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.grid(True, color="#e5e7eb", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)
    return fig, ax


def _to_bytes(fig, fmt: str) -> bytes:
    import matplotlib

    buffer = io.BytesIO()
    # SVG text stays text (small, selectable, searchable), drawn in the page's font.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buffer, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
    return buffer.getvalue()


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#6b7280")
    ax.set_xticks([])
    ax.set_yticks([])


def metric_values(movies: list[MovieStats], metric: str) -> list[tuple[int, float]]:
    """(movie index in processing order, value in display units) of successful movies."""
    spec = METRICS[metric]
    values = []
    for index, movie in enumerate(movies):
        if not movie.ok:
            continue
        value = spec.get(movie)
        if value is not None:
            values.append((index, float(value) * spec.scale))
    return values


def binned_median(x, y, max_bins: int = 60, min_per_bin: int = 10):
    """Median of ``y`` in consecutive bins of about equal count: (bin centres, medians).

    O(n log n) in memory and time whatever the run length (a sliding-window median over
    50,000 movies would need gigabytes).
    """
    import numpy as np

    n = len(y)
    bins = min(max_bins, n // min_per_bin)
    if bins < 2:
        return np.empty(0), np.empty(0)
    parts = np.array_split(np.arange(n), bins)
    centres = np.array([np.mean(x[p]) for p in parts])
    medians = np.array([np.median(y[p]) for p in parts])
    return centres, medians


def time_plot(run: RunFolder, metric: str, fmt: str = "svg") -> bytes:
    """A metric against movie number (processing order), with a rolling median."""
    import numpy as np

    spec = METRICS[metric]
    fig, ax = _figure()
    points = metric_values(run.movies, metric)
    if not points:
        _empty(ax, "no movies processed yet")
    else:
        x = np.array([p[0] + 1 for p in points])
        y = np.array([p[1] for p in points])
        # Thousands of points: raster them inside the SVG (axes and text stay vector).
        ax.scatter(x, y, s=6, color=ACCENT, alpha=0.6, linewidths=0, rasterized=len(x) > 2000)
        centres, medians = binned_median(x, y)
        if len(centres) >= 2:
            ax.plot(centres, medians, color=WARN, linewidth=1.2)
        ax.set_xlabel("Movie #", fontsize=8)
    ax.set_ylabel(spec.label, fontsize=8)
    return _to_bytes(fig, fmt)


def histogram(run: RunFolder, metric: str, fmt: str = "svg") -> bytes:
    """Histogram of a metric over successful movies."""
    import numpy as np

    spec = METRICS[metric]
    fig, ax = _figure()
    values = np.array([v for _, v in metric_values(run.movies, metric)])
    if values.size == 0:
        _empty(ax, "no movies processed yet")
    else:
        bins = min(40, max(5, int(np.sqrt(values.size))))
        ax.hist(values, bins=bins, color=ACCENT, alpha=0.85)
        ax.axvline(float(np.median(values)), color=WARN, linewidth=1.2)
        ax.set_ylabel("Movies", fontsize=8)
    ax.set_xlabel(spec.label, fontsize=8)
    return _to_bytes(fig, fmt)


def fsc_plot(run: RunFolder, fmt: str = "svg") -> bytes:
    """The current map's FSC curve against spatial frequency (1/Å), with the 0.143 line."""
    fig, ax = _figure()
    path = run.output_path("fsc_star")
    if path is None:
        _empty(ax, "no map yet")
        return _to_bytes(fig, fmt)
    curve = read_fsc(path)
    freq = [f for f, _ in curve]
    ax.plot(freq, [c for _, c in curve], color=ACCENT, linewidth=1.5)
    ax.axhline(0.143, color=WARN, linewidth=1, linestyle="--")
    resolution = fsc_resolution_A(curve)
    if resolution is not None:
        ax.axvline(1.0 / resolution, color="#6b7280", linewidth=0.8, linestyle=":")
        ax.set_title(f"FSC = 0.143 at {resolution:.2f} Å", fontsize=9)
    ax.set_ylim(-0.1, 1.05)
    ax.set_xlim(0, max(freq) if freq else 0.5)
    ax.set_xlabel("Spatial frequency (1/Å)", fontsize=8)
    ax.set_ylabel("FSC", fontsize=8)
    return _to_bytes(fig, fmt)


def map_slices(run: RunFolder, fmt: str = "png") -> bytes:
    """Central XY / XZ / YZ slices of the current map (memory-mapped, one slice each)."""
    import mrcfile
    import numpy as np

    path = run.output_path("map")
    prerendered = run.output_path("slices_png")
    if path is None and prerendered is not None and fmt == "png":
        return prerendered.read_bytes()
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 2.2), dpi=100, layout="constrained")
    axes = fig.subplots(1, 3)
    if path is None:
        for ax in axes:
            _empty(ax, "no map yet")
        return _to_bytes(fig, fmt)
    try:
        with mrcfile.mmap(path, mode="r") as mrc:
            volume = mrc.data
            nz, ny, nx = volume.shape
            slices = {
                "XY": np.array(volume[nz // 2]),
                "XZ": np.array(volume[:, ny // 2, :]),
                "YZ": np.array(volume[:, :, nx // 2]),
            }
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: unreadable map ({exc})") from exc
    for ax, (name, image) in zip(axes, slices.items(), strict=True):
        ax.imshow(image, cmap="gray", origin="lower")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return _to_bytes(fig, fmt)


def class_gallery(run: RunFolder, fmt: str = "png", max_classes: int = 48) -> bytes:
    """2D class averages in a grid, largest classes first, each labelled with its count."""
    import math

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    path = run.output_path("classes2d")
    if path is not None and path.suffix.lower() == ".png":
        return path.read_bytes()  # the workflow rendered the gallery itself
    classes = read_classes2d(path)[:max_classes] if path is not None else []
    cols = 8
    rows = max(1, math.ceil(len(classes) / cols))
    fig = Figure(figsize=(cols * 0.9, rows * 1.0), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    if not classes:
        axes[0][0].text(0, 0.5, "no 2D classes yet", color="#6b7280", fontsize=9)
    for ax, cls in zip(axes.flat, classes, strict=False):
        ax.imshow(cls.image, cmap="gray")
        label = f"#{cls.index}" + (f" · {cls.n_particles}" if cls.n_particles is not None else "")
        ax.set_title(label, fontsize=7)
    return _to_bytes(fig, fmt)


#: name -> (renderer, media type, files it depends on relative to the run summary).
PLOT_NAMES: tuple[str, ...] = (
    *(f"time_{m}" for m in METRICS),
    *(f"hist_{m}" for m in METRICS),
    "fsc",
    "slices",
    "classes2d",
)


def _renderer(name: str) -> tuple[Callable[[RunFolder], bytes], str, tuple[str, ...]]:
    if name.startswith("time_") and name[5:] in METRICS:
        return (lambda run: time_plot(run, name[5:])), "image/svg+xml", ("per_movie",)
    if name.startswith("hist_") and name[5:] in METRICS:
        return (lambda run: histogram(run, name[5:])), "image/svg+xml", ("per_movie",)
    if name == "fsc":
        return fsc_plot, "image/svg+xml", ("fsc_star",)
    if name == "slices":
        return map_slices, "image/png", ("map", "slices_png")
    if name == "classes2d":
        return class_gallery, "image/png", ("classes2d",)
    raise KeyError(name)


def _dependency_mtime(run: RunFolder, deps: tuple[str, ...]) -> tuple:
    stamps: list = []
    for dep in deps:
        path = (
            run.path / run.summary.per_movie if dep == "per_movie" else run.output_path(dep) or None
        )
        if path is not None and Path(path).exists():
            stat = Path(path).stat()
            stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
        else:
            stamps.append(None)
    return tuple(stamps)


class PlotCache:
    """A small LRU cache of rendered plots keyed by (run folder, plot, file mtimes)."""

    def __init__(self, max_entries: int = 256):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.renders = 0

    def get(self, run: RunFolder, name: str) -> tuple[bytes, str]:
        """Bytes and media type of plot ``name``; rendered only when its inputs changed."""
        render_fn, media_type, deps = _renderer(name)
        key = (str(run.path), name, _dependency_mtime(run, deps))
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key], media_type
        data = render_fn(run)
        with self._lock:
            self.renders += 1
            self._entries[key] = data
            # Drop stale renders of the same plot, then the least recently used.
            for old in [k for k in self._entries if k[:2] == key[:2] and k != key]:
                del self._entries[old]
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return data, media_type


#: Process-wide cache used by the web views.
default_cache = PlotCache()


def render(run: RunFolder, name: str) -> tuple[bytes, str]:
    """Render plot ``name`` of ``run`` through the process-wide cache (KeyError if unknown)."""
    return default_cache.get(run, name)
