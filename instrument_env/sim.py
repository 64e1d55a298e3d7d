"""Environment simulator: realistic readings for every configured sensor, with faults.

Each quantity has a baseline model (diurnal drift, noise, slow trends) and faults can
be injected over a time interval:

- ``ac_failure``: air-conditioning fault; room temperature ramps up (default
  1.5 °C/h) and humidity rises, then recovers exponentially (time constant 20 min).
- ``door_open``: a short warm-air bump (+0.3 °C, decaying), vibration ×5, +40 nT AC.
- ``sensor_silent``: the sensor sends nothing during the interval.
- ``magnetic_disturbance``: a lift or vehicle; DC field step (default +0.3 µT) and
  +150 nT at mains frequency.
- ``vibration``: floor vibration multiplied by ``magnitude`` (default 10).

``raw=True`` emits magnetometer and vibration readings as raw 1 kHz samples
(``"raw": {"sample_rate_Hz", "samples"}``: 3-axis field in nT for 0.5 s, geophone
velocity in m/s for 4 s), which ingest reduces with :mod:`instrument_env.reduce`, so the
whole raw path is exercised; otherwise the reduced values are computed directly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from instrument_env import reduce
from instrument_env.limits import EnvConfig, Sensor, load_env_config
from instrument_env.models import from_us, to_us

FAULT_KINDS = ("ac_failure", "door_open", "sensor_silent", "magnetic_disturbance", "vibration")
VIB_BANDS = [reduce.nominal_band_label(c) for c in reduce.third_octave_centres_Hz(1, 80)]


@dataclass(frozen=True)
class Fault:
    """A fault in ``room`` (or on one ``sensor``) from ``start`` to ``end``."""

    kind: str
    start: datetime
    end: datetime
    room: str | None = None
    sensor: str | None = None
    magnitude: float | None = None

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r} (faults: {', '.join(FAULT_KINDS)})")
        if self.end <= self.start:
            raise ValueError("a fault must end after it starts")

    def applies(self, sensor: Sensor) -> bool:
        if self.sensor is not None:
            return self.sensor == sensor.id
        return self.room is None or self.room == sensor.room


class EnvSimulator:
    """Deterministic (seeded) readings for all sensors of ``config``."""

    def __init__(
        self,
        config: EnvConfig | None = None,
        *,
        seed: int = 0,
        rooms: Iterable[str] | None = None,
        raw: bool = False,
        noise: float = 1.0,
    ):
        self.noise = noise
        self.config = config or load_env_config()
        self.rng = np.random.default_rng(seed)
        wanted = set(rooms) if rooms is not None else None
        self.sensors = [
            s for s in self.config.sensors.values() if wanted is None or s.room in wanted
        ]
        self.raw = raw
        # fixed per-sensor personality
        self._offset = {s.id: float(self.rng.normal(0, 0.05)) * noise for s in self.sensors}
        self._vib_shape = {
            s.id: 0.4 + 0.8 * np.exp(-((np.log10(self._band_hz()) - 1.3) ** 2) / 0.1)
            for s in self.sensors
        }

    @staticmethod
    def _band_hz() -> np.ndarray:
        return np.array([float(b) for b in VIB_BANDS])

    def _noise(self, sigma: float, size=None):
        return self.rng.normal(0, sigma * self.noise, size)

    # -- public API ---------------------------------------------------------
    def readings(self, start: datetime, end: datetime, faults: Iterable[Fault] = ()) -> list[dict]:
        """All readings with ``start <= ts < end``, in time order (CONTRACT dicts)."""
        return [r for batch in self.batches(start, end, faults) for r in batch]

    def batches(
        self,
        start: datetime,
        end: datetime,
        faults: Iterable[Fault] = (),
        *,
        step_s: float | None = None,
    ) -> Iterator[list[dict]]:
        """Readings grouped per time step (default: the shortest sensor interval)."""
        faults = list(faults)
        step_s = step_s or min(s.interval_s for s in self.sensors)
        start_us, end_us = to_us(start), to_us(end)
        next_due = {s.id: _ceil_to(start_us, s.interval_s) for s in self.sensors}
        t = start_us
        while t < end_us:
            horizon = min(t + int(step_s * 1e6), end_us)
            batch: list[dict] = []
            for sensor in self.sensors:
                step_us = int(sensor.interval_s * 1e6)
                while next_due[sensor.id] < horizon:
                    ts_us = next_due[sensor.id]
                    next_due[sensor.id] += step_us
                    if self._silent(sensor, ts_us, faults):
                        continue
                    batch.extend(self._sensor_readings(sensor, ts_us, faults))
            batch.sort(key=lambda r: r["ts"])
            yield batch
            t = horizon

    # -- models ---------------------------------------------------------------
    def _silent(self, sensor: Sensor, ts_us: int, faults: list[Fault]) -> bool:
        return any(
            f.kind == "sensor_silent" and f.applies(sensor) and _inside(f, ts_us) for f in faults
        )

    def _sensor_readings(self, sensor: Sensor, ts_us: int, faults: list[Fault]) -> list[dict]:
        ts = from_us(ts_us).isoformat()
        hours = ts_us / 3.6e9
        diurnal = math.sin(2 * math.pi * (hours % 24 - 9) / 24)  # max mid-afternoon
        out = []
        if self.raw and "magnetic_field_ac" in sensor.quantities:
            out.append(self._raw_mag_reading(sensor, ts_us, ts, faults))
        for quantity in sensor.quantities:
            unit = self.config.units.get(quantity, "")
            if self.raw and quantity in ("magnetic_field_ac", "magnetic_field_dc"):
                continue
            if self.raw and quantity == "vibration":
                levels = self._vib_levels(sensor, ts_us, faults)
                samples = self._raw_velocity(levels)
                out.append(_raw(sensor, "vibration", ts, "m/s", samples))
                continue
            if quantity == "vibration":
                for band, value in self._vibration(sensor, ts_us, faults).items():
                    out.append(_r(sensor, quantity, ts, value, unit, band))
                continue
            if quantity == "temperature":
                value = 20.0 + self._offset[sensor.id] + 0.05 * diurnal
                value += self._thermal_faults(sensor, ts_us, faults)
                value += self._noise(0.004)
            elif quantity == "humidity":
                value = 45.0 + 2.0 * diurnal + self._noise(0.2)
                value += 3.0 * self._thermal_faults(sensor, ts_us, faults, humidity=True)
            elif quantity == "magnetic_field_ac":
                value = self._mag_ac(sensor, ts_us, faults)
            elif quantity == "magnetic_field_dc":
                value = self._mag_dc(sensor, ts_us, faults)
            elif quantity == "ln2_level":
                value = 95.0 - ((hours * 2.5) % 55.0) + self._noise(0.3)
            elif quantity == "cooling_water_temperature":
                value = 19.0 + 0.1 * diurnal + self._noise(0.02)
            else:
                value = float(self._noise(1))
            out.append(_r(sensor, quantity, ts, float(value), unit))
        return out

    def _thermal_faults(
        self, sensor: Sensor, ts_us: int, faults: list[Fault], humidity: bool = False
    ) -> float:
        delta = 0.0
        for f in faults:
            if not f.applies(sensor):
                continue
            f0, f1 = to_us(f.start), to_us(f.end)
            if ts_us < f0:
                continue
            if f.kind == "ac_failure":
                rate = (f.magnitude or 1.5) / 3.6e9  # °C per µs
                peak = rate * (min(ts_us, f1) - f0)
                decay = math.exp(-max(ts_us - f1, 0) / (20 * 60e6))
                delta += peak * decay
            elif f.kind == "door_open" and not humidity:
                bump = f.magnitude or 0.3
                delta += bump * math.exp(-(ts_us - f0) / (10 * 60e6))
        return delta

    @staticmethod
    def _extra(sensor: Sensor, ts_us: int, faults: list[Fault], per_kind: dict) -> float:
        return sum(
            per_kind[f.kind]
            for f in faults
            if f.kind in per_kind and f.applies(sensor) and _inside(f, ts_us)
        )

    def _ac_level(self, sensor: Sensor, ts_us: int, faults: list[Fault]) -> float:
        return 25.0 + self._extra(
            sensor, ts_us, faults, {"door_open": 40.0, "magnetic_disturbance": 150.0}
        )

    def _dc_level(self, sensor: Sensor, ts_us: int, faults: list[Fault]) -> float:
        step = sum(
            (f.magnitude or 0.3)
            for f in faults
            if f.kind == "magnetic_disturbance" and f.applies(sensor) and _inside(f, ts_us)
        )
        return 48.0 + step

    def _mag_ac(self, sensor: Sensor, ts_us: int, faults: list[Fault]) -> float:
        return float(self._ac_level(sensor, ts_us, faults) * (1 + self._noise(0.04)))

    def _mag_dc(self, sensor: Sensor, ts_us: int, faults: list[Fault]) -> float:
        return float(self._dc_level(sensor, ts_us, faults) + self._noise(0.003))

    def _raw_mag_reading(self, sensor: Sensor, ts_us: int, ts: str, faults) -> dict:
        samples = self._raw_mag(
            self._ac_level(sensor, ts_us, faults), self._dc_level(sensor, ts_us, faults)
        )
        return _raw(sensor, "magnetic_field", ts, "nT", samples)

    def _raw_mag(self, ac_rms_nT: float, dc_uT: float, seconds: float = 0.5) -> np.ndarray:
        fs = 1000.0
        t = np.arange(int(fs * seconds)) / fs
        f = self.config.mains_frequency_Hz
        direction = np.array([0.6, 0.0, 0.8])
        phases = self.rng.uniform(0, 2 * np.pi, 3)
        ac = math.sqrt(2) * ac_rms_nT * np.sin(2 * np.pi * f * t[:, None] + phases)
        ac *= np.array([1.0, 0.7, 0.5])  # worst axis carries the nominal level
        return ac + dc_uT * 1000.0 * direction + self._noise(1.0, ac.shape)

    def _vibration(self, sensor: Sensor, ts_us: int, faults: list[Fault]) -> dict[str, float]:
        levels = self._vib_levels(sensor, ts_us, faults)
        noisy = levels * np.exp(self._noise(0.1, levels.shape))
        return {band: float(v) for band, v in zip(VIB_BANDS, noisy, strict=True)}

    def _vib_levels(self, sensor: Sensor, ts_us: int, faults: list[Fault]) -> np.ndarray:
        factor = 1.0
        for f in faults:
            if f.applies(sensor) and _inside(f, ts_us):
                if f.kind == "door_open":
                    factor *= 5.0
                elif f.kind == "vibration":
                    factor *= f.magnitude or 10.0
        return self._vib_shape[sensor.id] * factor  # µm/s RMS per band

    def _raw_velocity(self, levels_um_s: np.ndarray, seconds: float = 4.0) -> np.ndarray:
        fs = 1000.0
        t = np.arange(int(fs * seconds)) / fs
        v = np.zeros_like(t)
        for centre, level in zip(self._band_hz(), levels_um_s, strict=True):
            f = round(centre * seconds) / seconds  # a tone on an FFT bin inside the band
            v += math.sqrt(2) * level * 1e-6 * np.sin(2 * np.pi * f * t + self.rng.uniform(0, 6.3))
        return v


def _r(sensor: Sensor, quantity: str, ts: str, value: float, unit: str, band=None) -> dict:
    out = {"sensor": sensor.id, "quantity": quantity, "ts": ts, "value": value, "unit": unit}
    if band is not None:
        out["band"] = band
    return out


def _raw(sensor: Sensor, quantity: str, ts: str, unit: str, samples: np.ndarray) -> dict:
    return {
        "sensor": sensor.id,
        "quantity": quantity,
        "ts": ts,
        "unit": unit,
        "raw": {"sample_rate_Hz": 1000.0, "samples": np.round(samples, 12).tolist()},
    }


def _inside(fault: Fault, ts_us: int) -> bool:
    return to_us(fault.start) <= ts_us < to_us(fault.end)


def _ceil_to(t_us: int, interval_s: float) -> int:
    step = int(interval_s * 1e6)
    return -(-t_us // step) * step


def fault_at(kind: str, start: datetime, minutes: float, **kwargs) -> Fault:
    """Shorthand: a fault of ``kind`` lasting ``minutes`` from ``start``."""
    return Fault(kind, start, start + timedelta(minutes=minutes), **kwargs)
