"""What the tests read back: a channel's stored readings between two times."""

from __future__ import annotations

from datetime import datetime

from instrument_env.models import to_us
from instrument_env.storage import Series, channel_series_us


def channel_series(
    session, sensor: str, quantity: str, start: datetime, end: datetime, *, band=None
) -> Series:
    """The stored readings of (sensor, quantity) with ``start <= ts <= end``."""
    return channel_series_us(session, sensor, quantity, to_us(start), to_us(end), band=band)
