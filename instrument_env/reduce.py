"""Reduce high-rate sensor samples to the values that are stored and judged.

- Floor vibration: raw accelerometer (m/s²) or geophone (m/s) samples → velocity RMS
  per one-third-octave band (µm/s) → the most stringent generic vibration criterion
  (VC curve) met. VC curves after Amick et al. (2005): constant velocity per band
  from 1 to 80 Hz (VC-A 50, VC-B 25, VC-C 12.5, VC-D 6.25, VC-E 3.12 µm/s).
- Magnetic field: raw magnetometer samples (nT, one column per axis) → RMS amplitude
  at the mains frequency (and optionally its harmonics) per axis, by least-squares
  fit of a sine and cosine, which is exact for a non-integer number of periods.

Pure numpy functions; no database, no I/O.
"""

from __future__ import annotations

import numpy as np

#: Generic vibration criteria, velocity RMS per one-third-octave band (µm/s), loosest first.
VC_CURVES_UM_S: tuple[tuple[str, float], ...] = (
    ("workshop", 800.0),
    ("office", 400.0),
    ("residential", 200.0),
    ("operating-theatre", 100.0),
    ("VC-A", 50.0),
    ("VC-B", 25.0),
    ("VC-C", 12.5),
    ("VC-D", 6.25),
    ("VC-E", 3.12),
    ("VC-F", 1.56),
    ("VC-G", 0.78),
)
#: The VC curves are defined over this band-centre range (Hz).
VC_RANGE_HZ = (1.0, 80.0)


def third_octave_centres_Hz(f_min_Hz: float = 1.0, f_max_Hz: float = 80.0) -> np.ndarray:
    """Exact base-10 one-third-octave band centres 10^(n/10) Hz between the limits."""
    n = np.arange(
        np.ceil(10 * np.log10(f_min_Hz) - 1e-9), np.floor(10 * np.log10(f_max_Hz) + 1e-9) + 1
    )
    return 10.0 ** (n / 10.0)


def nominal_band_label(centre_Hz: float) -> str:
    """The preferred (nominal) label of a one-third-octave band centre, e.g. 12.59 -> '12.5'."""
    nominal = (1.0, 1.25, 1.6, 2.0, 2.5, 3.15, 4.0, 5.0, 6.3, 8.0)
    decade = np.floor(np.log10(centre_Hz) + 1e-9)
    mantissa = centre_Hz / 10**decade
    best = min(nominal, key=lambda m: abs(np.log10(m / mantissa)))
    if best == 1.0 and mantissa > 9:  # rounding up into the next decade
        decade += 1
    return f"{best * 10**decade:g}"


def band_velocity_rms_um_s(
    samples: np.ndarray,
    sample_rate_Hz: float,
    *,
    kind: str = "acceleration",
    f_min_Hz: float = 1.0,
    f_max_Hz: float = 80.0,
) -> dict[str, float]:
    """Velocity RMS (µm/s) in each one-third-octave band.

    ``samples``: 1-D signal in m/s² (``kind="acceleration"``) or m/s (``kind="velocity"``).
    Acceleration is integrated to velocity in the frequency domain (divide by i·2πf).
    Band power is summed from the one-sided power spectrum (Parseval), band edges at
    centre·10^(±1/20). Returns ``{nominal band label: µm/s RMS}``.
    """
    x = np.asarray(samples, dtype=float)
    if x.ndim != 1 or x.size < 8:
        raise ValueError("samples must be a 1-D array of at least 8 values")
    if kind not in ("acceleration", "velocity"):
        raise ValueError(f"kind must be 'acceleration' or 'velocity', not {kind!r}")
    n = x.size
    spectrum = np.fft.rfft(x - x.mean())
    freqs = np.fft.rfftfreq(n, d=1.0 / sample_rate_Hz)
    if kind == "acceleration":
        with np.errstate(divide="ignore", invalid="ignore"):
            spectrum = np.where(freqs > 0, spectrum / (2j * np.pi * freqs), 0)
    # one-sided power: |X|² · 2 / n² (DC and Nyquist once) = mean square contribution
    power = np.abs(spectrum) ** 2 * 2.0 / n**2
    power[0] /= 2.0
    if n % 2 == 0:
        power[-1] /= 2.0
    out: dict[str, float] = {}
    for centre in third_octave_centres_Hz(f_min_Hz, f_max_Hz):
        lo, hi = centre * 10 ** (-1 / 20), centre * 10 ** (1 / 20)
        in_band = (freqs >= lo) & (freqs < hi)
        out[nominal_band_label(centre)] = float(np.sqrt(power[in_band].sum()) * 1e6)
    return out


def vc_class(band_rms_um_s: dict[str, float]) -> str:
    """The most stringent VC curve that every band from 1 to 80 Hz meets."""
    bands = {
        label: value
        for label, value in band_rms_um_s.items()
        if VC_RANGE_HZ[0] <= float(label) <= VC_RANGE_HZ[1]
    }
    if not bands:
        raise ValueError("no one-third-octave band between 1 and 80 Hz")
    worst = max(bands.values())
    met = "none"
    for name, level in VC_CURVES_UM_S:
        if worst <= level:
            met = name
    return met


def mains_rms_nT(
    samples: np.ndarray, sample_rate_Hz: float, mains_Hz: float = 50.0, harmonics: int = 1
) -> np.ndarray:
    """RMS amplitude (same unit as ``samples``, nT) at the mains frequency, per axis.

    ``samples``: (n,) or (n, axes). A sine/cosine pair at each of ``harmonics`` multiples
    of ``mains_Hz`` plus an offset and a linear trend are fitted by least squares; the
    result is sqrt(sum of (amplitude²/2)) over the fitted harmonics, per axis.
    """
    x = np.asarray(samples, dtype=float)
    one_axis = x.ndim == 1
    if one_axis:
        x = x[:, None]
    n = x.shape[0]
    if n < 4 * harmonics + 2:
        raise ValueError("too few samples for the requested harmonics")
    if mains_Hz * harmonics >= sample_rate_Hz / 2:
        raise ValueError("mains harmonics above the Nyquist frequency")
    t = np.arange(n) / sample_rate_Hz
    columns = [np.ones(n), t - t.mean()]
    for k in range(1, harmonics + 1):
        columns += [np.sin(2 * np.pi * k * mains_Hz * t), np.cos(2 * np.pi * k * mains_Hz * t)]
    design = np.stack(columns, axis=1)
    coef, *_ = np.linalg.lstsq(design, x, rcond=None)
    amplitudes_sq = coef[2:] ** 2  # (2·harmonics, axes): a² for sine and cosine terms
    rms = np.sqrt(amplitudes_sq.sum(axis=0) / 2.0)
    return rms[0] if one_axis else rms


def field_magnitude_uT(samples_nT: np.ndarray) -> float:
    """Magnitude of the mean (DC) field vector, in µT, from (n, 3) samples in nT."""
    mean = np.asarray(samples_nT, dtype=float).reshape(len(samples_nT), -1).mean(axis=0)
    return float(np.linalg.norm(mean) / 1000.0)


#: Units accepted for raw samples and what they mean.
RAW_VIBRATION_UNITS = {"m/s²": "acceleration", "m/s^2": "acceleration", "m/s": "velocity"}
RAW_FIELD_UNITS = {"nT": 1.0, "µT": 1000.0}
MAX_RAW_SAMPLES = 200_000


def expand_raw_reading(reading: dict, quantities: tuple[str, ...], mains_Hz: float) -> list[dict]:
    """Reduce one raw-sample reading to stored readings (CONTRACT dicts).

    ``reading``: ``{"sensor", "quantity", "ts", "unit", "raw": {"sample_rate_Hz",
    "samples"}}`` with quantity ``vibration`` (samples in m/s² or m/s, 1-D) or
    ``magnetic_field`` (samples in nT or µT, one row per sample, one column per axis).
    Vibration gives one ``vibration`` reading per one-third-octave band 1–80 Hz (µm/s
    RMS); a magnetic field gives ``magnetic_field_ac`` (nT RMS at ``mains_Hz``, worst
    axis) and ``magnetic_field_dc`` (µT, field magnitude), as far as the sensor reports
    them (``quantities``). Raises ValueError with the reason for a malformed reading.
    """
    raw = reading.get("raw")
    if not isinstance(raw, dict):
        raise ValueError("'raw' must be an object with sample_rate_Hz and samples")
    rate = raw.get("sample_rate_Hz")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
        raise ValueError(f"raw.sample_rate_Hz {rate!r} is not a positive number")
    samples = raw.get("samples")
    if not isinstance(samples, list) or not samples:
        raise ValueError("raw.samples must be a non-empty list")
    if len(samples) > MAX_RAW_SAMPLES:
        raise ValueError(f"raw.samples has {len(samples)} samples (max {MAX_RAW_SAMPLES})")
    try:
        array = np.asarray(samples, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(
            "raw.samples must hold numbers (a list, or a list of per-axis lists)"
        ) from None
    if not np.isfinite(array).all():
        raise ValueError("raw.samples holds non-finite values")
    base = {"sensor": reading.get("sensor"), "ts": reading.get("ts")}
    quantity, unit = reading.get("quantity"), reading.get("unit")
    if quantity == "vibration":
        kind = RAW_VIBRATION_UNITS.get(unit)
        if kind is None:
            raise ValueError(f"raw vibration unit {unit!r} (expected m/s² or m/s)")
        if array.ndim != 1:
            raise ValueError("raw vibration samples must be one axis (a flat list)")
        if array.size / rate < 2.0:
            raise ValueError("raw vibration needs at least 2 s of samples for the 1 Hz band")
        bands = band_velocity_rms_um_s(array, float(rate), kind=kind)
        return [
            {**base, "quantity": "vibration", "band": band, "value": value, "unit": "µm/s"}
            for band, value in bands.items()
        ]
    if quantity == "magnetic_field":
        scale = RAW_FIELD_UNITS.get(unit)
        if scale is None:
            raise ValueError(f"raw magnetic field unit {unit!r} (expected nT or µT)")
        if array.ndim not in (1, 2):
            raise ValueError("raw magnetic samples must be a list or a list of per-axis lists")
        nT = array * scale
        out = []
        if "magnetic_field_ac" in quantities:
            ac = float(np.max(mains_rms_nT(nT, float(rate), mains_Hz)))
            out.append({**base, "quantity": "magnetic_field_ac", "value": ac, "unit": "nT"})
        if "magnetic_field_dc" in quantities:
            dc = field_magnitude_uT(nT.reshape(len(nT), -1))
            out.append({**base, "quantity": "magnetic_field_dc", "value": dc, "unit": "µT"})
        return out
    raise ValueError(f"raw samples are not supported for quantity {quantity!r}")
