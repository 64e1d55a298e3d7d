"""How well a channel's readings cover a window, in time: the gate's settling window and
an acquisition's provenance judge by the same :func:`judge`.

A window is covered except for its gaps longer than the allowed gap
(``coverage.max_gap_intervals`` × the sensor's ``interval_s``), counted whole, from the
window's start to the first reading, between readings and (``tail``) from the last
reading to the window's end. A channel is covered when no gap is too long and at least
``coverage.min_fraction`` of the expected readings (window / ``interval_s``) arrived.
A banded quantity (``bands`` in limits.yaml, e.g. vibration per one-third-octave band)
is judged band by band: each band is a channel of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from instrument_env.limits import Coverage
from instrument_env.models import from_us


def duration_text(seconds: float) -> str:
    """``3 h 5 min``, ``90 min``, ``12 min 30 s``, ``47 s`` (whole seconds)."""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours < 2:
        hours, minutes = 0, minutes + 60 * hours
    if hours >= 2:  # below, in minutes ("90 min")
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def _iso(ts_us: int) -> str:
    return from_us(int(ts_us)).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ChannelCoverage:
    """The coverage of one channel (one band of a banded one) over ``[start, end]``."""

    sensor: str
    quantity: str
    band: str | None
    interval_s: float
    start_us: int
    end_us: int
    received: int
    expected: float
    covered_us: int
    longest_gap: tuple[int, int]  # (start, end) µs
    long_gaps: tuple[tuple[int, int], ...]  # every gap longer than allowed
    allowed_gap_us: float
    min_fraction: float

    @property
    def fraction(self) -> float:
        return min(self.received / self.expected, 1.0) if self.expected else 1.0

    @property
    def ok(self) -> bool:
        return self.fraction >= self.min_fraction and not self.long_gaps

    @property
    def channel(self) -> str:
        many = self.band and "," in self.band  # bands judged alike, reported together
        band = f" band{'s' if many else ''} {self.band} Hz" if self.band else ""
        return f"{self.sensor} {self.quantity}{band}"

    def reason(self, window: str) -> str:
        """Why the channel is not covered, e.g. ``krios-t1 temperature: 12 min 30 s of the
        60 min settling window (… to …) covered, longest gap 47 min 10 s (… to …, allowed
        1 min); 75 of 360 expected readings (21%, 80% needed)``."""
        gap_start, gap_end = self.longest_gap
        return (
            f"{self.channel}: {duration_text(self.covered_us / 1e6)} of the "
            f"{duration_text((self.end_us - self.start_us) / 1e6)} {window} "
            f"({_iso(self.start_us)} to {_iso(self.end_us)}) covered, longest gap "
            f"{duration_text((gap_end - gap_start) / 1e6)} ({_iso(gap_start)} to "
            f"{_iso(gap_end)}, allowed {duration_text(self.allowed_gap_us / 1e6)}); "
            f"{self.received} of {self.expected:.0f} expected readings every "
            f"{self.interval_s:g} s ({100 * self.fraction:.0f}%, "
            f"{100 * self.min_fraction:g}% needed)"
        )

    def to_dict(self) -> dict:
        gap_start, gap_end = self.longest_gap
        return {
            "sensor": self.sensor,
            "quantity": self.quantity,
            **({"band": self.band} if self.band else {}),
            "interval_s": self.interval_s,
            "window_s": (self.end_us - self.start_us) / 1e6,
            "covered_s": self.covered_us / 1e6,
            "received": self.received,
            "expected": round(self.expected, 1),
            "fraction": round(self.fraction, 4),
            "longest_gap_s": (gap_end - gap_start) / 1e6,
            "longest_gap": {"start": _iso(gap_start), "end": _iso(gap_end)},
            "gaps": [{"start": _iso(a), "end": _iso(b)} for a, b in self.long_gaps[:100]],
            "covered": self.ok,
        }


def judge(
    ts_us: np.ndarray, window: tuple[int, int], interval_s: float, need: Coverage, channel: tuple
) -> ChannelCoverage:
    """The coverage of the readings at ``ts_us`` over ``window`` (start, end, µs) of
    ``channel`` (sensor, quantity, band or None[, tail]); ``tail`` (default True) counts
    the time after the last reading as a gap too."""
    start_us, end_us = window
    sensor, quantity, band, tail = (*channel, True)[:4]
    times = np.unique(np.asarray(ts_us, dtype=np.int64))
    times = times[(times >= start_us) & (times <= end_us)]
    edges = np.concatenate([[start_us], times, [end_us] if tail or not len(times) else []])
    gaps = np.diff(edges.astype(np.int64))
    allowed_us = need.max_gap_intervals * interval_s * 1e6
    long = np.flatnonzero(gaps > allowed_us)
    if len(gaps):
        i = int(np.argmax(gaps))
        longest = (int(edges[i]), int(edges[i + 1]))
    else:
        longest = (start_us, start_us)
    window_us = end_us - start_us
    return ChannelCoverage(
        sensor=sensor,
        quantity=quantity,
        band=band,
        interval_s=interval_s,
        start_us=start_us,
        end_us=end_us,
        received=int(len(times)),
        expected=window_us / 1e6 / interval_s,
        covered_us=int(window_us - gaps[long].sum()),
        longest_gap=longest,
        long_gaps=tuple((int(edges[i]), int(edges[i + 1])) for i in long),
        allowed_gap_us=allowed_us,
        min_fraction=need.min_fraction,
    )
