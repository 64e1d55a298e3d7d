"""A rule's judged series and its breach/clear tests, shared by alarms, gate and provenance.

For a rule on channel (sensor, quantity[, band]):

- ``high``/``low``: the readings themselves; with ``band: any`` the worst band at each
  time (for ``high`` the ``max`` band derived at ingest, for ``low`` the minimum).
- ``drift``: at each reading, the peak-to-peak change of the readings within the
  trailing ``window_s`` (a stability rule, e.g. °C per hour).

And :func:`vibration_class`: the VC curve a vibration sensor's latest spectrum meets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from instrument_env.limits import ANY_BAND, MAX_BAND, Rule, rule_band_filter
from instrument_env.reduce import VC_RANGE_HZ, vc_class
from instrument_env.storage import (
    channel_series_us,
    channel_values_us,
    last_reading_of_channel_us,
)


@dataclass(frozen=True)
class Judged:
    """Times (µs since epoch) and judged values of one rule, sorted by time."""

    ts_us: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.ts_us)


def lookback_us(rule: Rule) -> int:
    """How much history before the judged range a rule reads (its drift window)."""
    return int((rule.window_s or 0) * 1e6) if rule.kind == "drift" else 0


def judged_series(
    session: Session,
    rule: Rule,
    start_us: int,
    end_us: int,
    *,
    readings: tuple[np.ndarray, np.ndarray] | None = None,
) -> Judged:
    """The rule's judged values at readings in ``[start_us, end_us]``.

    Drift rules read ``window_s`` more history so that every returned value sees a
    full window. ``readings``: the channel's (times, values) as
    :func:`~instrument_env.storage.channel_values_us` returns them for the rule's band
    filter, covering at least ``[start_us - lookback_us(rule), end_us]`` (several rules
    of one channel share one read); the rows in range are used, the same as a query.
    """
    window_us = lookback_us(rule)
    band = rule_band_filter(rule)
    if readings is None:
        ts, values = channel_values_us(
            session, rule.sensor, rule.quantity, start_us - window_us, end_us, band=band
        )
    else:
        ts, values = readings
        lo = np.searchsorted(ts, start_us - window_us, side="left")
        hi = np.searchsorted(ts, end_us, side="right")
        ts, values = ts[lo:hi], values[lo:hi]
    if rule.band == ANY_BAND and band != MAX_BAND and len(ts):
        ts, values = _worst_per_time(ts, values, low=rule.kind == "low")
    if rule.kind == "drift":
        values = trailing_peak_to_peak(ts, values, window_us)
        keep = ts >= start_us
        ts, values = ts[keep], values[keep]
    return Judged(ts, values)


def _worst_per_time(ts: np.ndarray, values: np.ndarray, *, low: bool):
    unique, inverse = np.unique(ts, return_inverse=True)
    out = np.full(unique.shape, np.inf if low else -np.inf)
    (np.minimum if low else np.maximum).at(out, inverse, values)
    return unique, out


def trailing_peak_to_peak(ts_us: np.ndarray, values: np.ndarray, window_us: int) -> np.ndarray:
    """max - min of the values with ts in ``[t - window, t]`` for each t (sorted ``ts_us``).

    Vectorised range-extreme queries on a sparse table: O(n log n) numpy work.
    """
    n = len(values)
    if n == 0:
        return np.empty(0)
    values = np.asarray(values, dtype=float)
    first = np.searchsorted(ts_us, ts_us - window_us, side="left")
    length = np.arange(n) - first + 1
    level = np.floor(np.log2(length)).astype(int)
    highs, lows = [values], [values]
    span = 1
    while 2 * span <= n:
        highs.append(np.maximum(highs[-1][:-span], highs[-1][span:]))
        lows.append(np.minimum(lows[-1][:-span], lows[-1][span:]))
        span *= 2
    out_hi = np.empty(n)
    out_lo = np.empty(n)
    for k in np.unique(level):
        rows = np.flatnonzero(level == k)
        right = rows - (1 << k) + 1
        left = first[rows]
        out_hi[rows] = np.maximum(highs[k][left], highs[k][right])
        out_lo[rows] = np.minimum(lows[k][left], lows[k][right])
    return out_hi - out_lo


def breaches(rule: Rule, values: np.ndarray, level: float) -> np.ndarray:
    """True where a value is beyond ``level`` (outside the allowed side)."""
    return values < level if rule.kind == "low" else values > level


def cleared(rule: Rule, values: np.ndarray, level: float) -> np.ndarray:
    """True where a value is back inside ``level`` by at least the rule's hysteresis."""
    if rule.kind == "low":
        return values >= level + rule.hysteresis
    return values <= level - rule.hysteresis


def worst(rule: Rule, values: np.ndarray) -> float:
    return float(values.min() if rule.kind == "low" else values.max())


def verb(rule: Rule) -> str:
    return {"high": "above", "low": "below", "drift": "above"}[rule.kind]


@dataclass(frozen=True)
class VibrationClass:
    """The vibration criterion (VC) curve one spectrum meets (:func:`vc_class`)."""

    sensor: str
    at_us: int  # time of the spectrum (µs since the epoch, UTC)
    vc: str  # e.g. "VC-D"; "none" when even the workshop curve is exceeded
    worst_um_s: float  # largest one-third-octave band RMS between 1 and 80 Hz (µm/s)


def vibration_class(session: Session, sensor: str, at_us: int) -> VibrationClass | None:
    """The VC class of ``sensor``'s latest vibration spectrum at or before ``at_us`` (its
    stored one-third-octave bands); None without one (no readings, or no band 1–80 Hz)."""
    last_us = last_reading_of_channel_us(session, sensor, "vibration", at_us)
    if last_us is None:
        return None
    spectrum = channel_series_us(session, sensor, "vibration", last_us, last_us)
    bands = {
        str(band): float(value)
        for band, value in zip(spectrum.bands, spectrum.values, strict=True)
        if band not in ("", MAX_BAND)
    }
    try:
        vc = vc_class(bands)
    except ValueError:
        return None
    in_range = [v for band, v in bands.items() if VC_RANGE_HZ[0] <= float(band) <= VC_RANGE_HZ[1]]
    return VibrationClass(sensor, int(last_us), vc, max(in_range))
