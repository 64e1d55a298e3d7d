"""The environment configuration: sensors (facility.yaml) joined with limits (limits.yaml).

:func:`load_env_config` reads both files, validates them (schema and cross-references:
every rule names a configured sensor of its room and one of that sensor's quantities,
in a quantity whose canonical unit is known) and returns an immutable
:class:`EnvConfig` that the rest of :mod:`instrument_env` works from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cryofac import config as cfg
from cryofac.errors import ConfigError, CryofacError

ANY_BAND = "any"
#: Derived at ingest for banded quantities: the largest band value at each time.
MAX_BAND = "max"


def rule_band_filter(rule: Rule) -> str | None:
    """Which stored band a rule reads: its own band, ``max`` for a high rule over
    every band (one row per time instead of one per band), or None for all bands."""
    if rule.band == ANY_BAND:
        return MAX_BAND if rule.kind == "high" else None
    return rule.band


class UnknownInstrument(CryofacError):
    """An instrument id that is not in the facility configuration (portal: 404)."""


@dataclass(frozen=True)
class Sensor:
    id: str
    room: str
    quantities: tuple[str, ...]
    interval_s: float
    stale_after_s: float
    model: str = ""


@dataclass(frozen=True)
class Rule:
    """One alarm/gate rule on one channel (sensor, quantity[, band])."""

    id: str
    room: str
    sensor: str
    quantity: str
    unit: str
    kind: str  # "high" | "low" | "drift"
    limit: float
    warning: float | None
    hysteresis: float
    delay_s: float
    escalate_after_s: float
    gate: bool
    window_s: float | None = None
    band: str | None = None  # None: no band; "any": every band; else a band label
    #: "k of n" persistence: the fraction of readings within the trailing ``delay_s``
    #: that must be beyond the level for the alarm to fire (1.0: an unbroken run).
    breach_fraction: float = 0.6

    def level(self, severity: str) -> float:
        """Threshold of ``severity`` ("warning" or "critical") in the channel's unit."""
        if severity == "warning" and self.warning is not None:
            return self.warning
        return self.limit

    @property
    def alarm_level(self) -> float:
        """The level whose crossing starts an alarm (the warning level when there is one)."""
        return self.warning if self.warning is not None else self.limit

    def describe(self) -> str:
        channel = f"{self.sensor} {self.quantity}"
        if self.band not in (None, ANY_BAND):
            channel += f" band {self.band} Hz"
        if self.kind == "drift":
            return f"{channel} change over {self.window_s:g} s"
        return channel


@dataclass(frozen=True)
class Plausibility:
    """Physically possible readings of one quantity (canonical unit): a reading outside
    ``[minimum, maximum]`` or equal to a logger's "no value" code is rejected at ingest,
    kept with its reason in ``env_rejected_readings``, and counts as missing data."""

    minimum: float | None = None
    maximum: float | None = None
    sentinels: tuple[float, ...] = ()

    def problem(self, value: float) -> str | None:
        """Why ``value`` is implausible, or None when it is plausible."""
        if value in self.sentinels:
            return f"value {value:g} is a logger's no-value code"
        if self.minimum is not None and value < self.minimum:
            return f"value {value:g} is below the plausible minimum {self.minimum:g}"
        if self.maximum is not None and value > self.maximum:
            return f"value {value:g} is above the plausible maximum {self.maximum:g}"
        return None


@dataclass(frozen=True)
class Coverage:
    """How densely a channel's readings must cover a window (settling window, acquisition).

    ``max_gap_intervals``: longest allowed gap between consecutive readings (and from the
    window's start to the first reading), in multiples of the sensor's ``interval_s``;
    ``min_fraction``: readings received / readings expected (window / ``interval_s``).
    """

    max_gap_intervals: float = 6.0
    min_fraction: float = 0.8


@dataclass(frozen=True)
class IngestOptions:
    """Clock bounds of ingest: readings more than ``max_future_s`` ahead of the server's
    clock, or more than ``max_age_days`` old, are refused with a reason."""

    max_future_s: float = 5.0
    max_age_days: float = 400.0


@dataclass(frozen=True)
class Instrument:
    id: str
    name: str
    room: str
    environment_gated: bool


@dataclass(frozen=True)
class EnvConfig:
    sensors: dict[str, Sensor]
    rules: tuple[Rule, ...]
    instruments: dict[str, Instrument]
    rooms: dict[str, str]  # id -> name
    units: dict[str, str]  # quantity -> canonical unit
    settling_window_s: dict[str, float]  # room -> seconds
    escalate_to: dict[str, str] = field(default_factory=dict)
    mains_frequency_Hz: float = 50.0
    default_escalate_after_s: float = 900.0
    retention_days: dict[str, float | None] = field(
        default_factory=lambda: {"raw_days": 400.0, "minute_days": 800.0, "hour_days": None}
    )
    plausibility: dict[str, Plausibility] = field(default_factory=dict)  # quantity ->
    coverage: dict[str, Coverage] = field(default_factory=dict)  # room ->
    ingest: IngestOptions = field(default_factory=IngestOptions)
    #: quantity -> the band labels each of its reading times carries (coverage per band)
    bands: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def coverage_for(self, room: str) -> Coverage:
        """The coverage requirement of ``room`` (the defaults when not configured)."""
        return self.coverage.get(room, Coverage())

    def plausibility_of(self, quantity: str) -> Plausibility | None:
        return self.plausibility.get(quantity)

    def rules_for_room(self, room: str) -> list[Rule]:
        return [r for r in self.rules if r.room == room]

    def instrument(self, instrument_id: str) -> Instrument:
        try:
            return self.instruments[instrument_id]
        except KeyError:
            known = ", ".join(sorted(self.instruments))
            raise UnknownInstrument(
                f"unknown instrument {instrument_id!r} (instruments: {known})"
            ) from None

    def sensors_in_room(self, room: str) -> list[Sensor]:
        return [s for s in self.sensors.values() if s.room == room]


def build_env_config(facility: dict, limits: dict, source: str = "limits.yaml") -> EnvConfig:
    """Join validated facility and limits documents; raise ConfigError on a bad reference."""
    sensors = {
        s["id"]: Sensor(
            id=s["id"],
            room=s["room"],
            quantities=tuple(s["quantities"]),
            interval_s=float(s.get("interval_s", s["stale_after_s"])),
            stale_after_s=float(s["stale_after_s"]),
            model=s.get("model", ""),
        )
        for s in facility["sensors"]
    }
    rooms = {r["id"]: r["name"] for r in facility["rooms"]}
    units = {q: spec["unit"] for q, spec in limits["quantities"].items()}
    defaults = limits.get("defaults", {})
    default_sentinels = tuple(float(v) for v in limits.get("sentinels", []))
    plausibility = {}
    for quantity, spec in limits["quantities"].items():
        low, high = spec.get("plausible_min"), spec.get("plausible_max")
        if low is not None and high is not None and low >= high:
            raise ConfigError(
                source, f"quantities.{quantity}.plausible_min", "must be below plausible_max"
            )
        plausibility[quantity] = Plausibility(
            minimum=None if low is None else float(low),
            maximum=None if high is None else float(high),
            sentinels=tuple(float(v) for v in spec.get("sentinels", default_sentinels)),
        )
    bands = {
        quantity: tuple(dict.fromkeys(_band_label(b) for b in spec["bands"]))
        for quantity, spec in limits["quantities"].items()
        if spec.get("bands")
    }
    default_coverage = Coverage(**defaults.get("coverage", {}))
    coverage: dict[str, Coverage] = {}
    rules: list[Rule] = []
    settling: dict[str, float] = {}
    escalate_to: dict[str, str] = {}
    seen: set[str] = set()
    for room, spec in limits["rooms"].items():
        if room not in rooms:
            raise ConfigError(
                source, f"rooms.{room}", f"unknown room (rooms: {', '.join(sorted(rooms))})"
            )
        settling[room] = float(
            spec.get("settling_window_s", defaults.get("settling_window_s", 1800))
        )
        if "escalate_to" in spec:
            escalate_to[room] = spec["escalate_to"]
        coverage[room] = Coverage(**{**defaults.get("coverage", {}), **spec.get("coverage", {})})
        for index, r in enumerate(spec["rules"]):
            key = f"rooms.{room}.rules[{index}]"
            if r["id"] in seen:
                raise ConfigError(source, f"{key}.id", f"duplicate rule id {r['id']!r}")
            seen.add(r["id"])
            sensor = sensors.get(r["sensor"])
            if sensor is None:
                raise ConfigError(source, f"{key}.sensor", f"unknown sensor {r['sensor']!r}")
            if sensor.room != room:
                raise ConfigError(
                    source, f"{key}.sensor", f"sensor {sensor.id!r} is in room {sensor.room!r}"
                )
            if r["quantity"] not in sensor.quantities:
                raise ConfigError(
                    source,
                    f"{key}.quantity",
                    f"sensor {sensor.id!r} does not report {r['quantity']!r} "
                    f"(it reports {', '.join(sensor.quantities)})",
                )
            if r["quantity"] not in units:
                raise ConfigError(source, f"{key}.quantity", "no unit under quantities")
            if r["kind"] == "drift" and "window_s" not in r:
                raise ConfigError(source, f"{key}.window_s", "required for a drift rule")
            warning = r.get("warning")
            if warning is not None:
                wrong_side = warning < r["limit"] if r["kind"] == "low" else warning > r["limit"]
                if wrong_side:
                    raise ConfigError(source, f"{key}.warning", "must be reached before the limit")
            band = r.get("band")
            rules.append(
                Rule(
                    id=r["id"],
                    room=room,
                    sensor=r["sensor"],
                    quantity=r["quantity"],
                    unit=units[r["quantity"]],
                    kind=r["kind"],
                    limit=float(r["limit"]),
                    warning=None if warning is None else float(warning),
                    hysteresis=float(r.get("hysteresis", defaults.get("hysteresis", 0.0))),
                    delay_s=float(r.get("delay_s", defaults.get("delay_s", 60))),
                    escalate_after_s=float(
                        r.get("escalate_after_s", defaults.get("escalate_after_s", 900))
                    ),
                    gate=bool(r.get("gate", True)),
                    window_s=float(r["window_s"]) if "window_s" in r else None,
                    band=None if band is None else _band_label(band),
                    breach_fraction=float(
                        r.get("breach_fraction", defaults.get("breach_fraction", 0.6))
                    ),
                )
            )
    instruments = {
        i["id"]: Instrument(
            id=i["id"],
            name=i["name"],
            room=i["room"],
            environment_gated=bool(i.get("environment_gated", False)),
        )
        for i in facility["instruments"]
    }
    for room in rooms:
        settling.setdefault(room, float(defaults.get("settling_window_s", 1800)))
        coverage.setdefault(room, default_coverage)
    return EnvConfig(
        sensors=sensors,
        rules=tuple(rules),
        instruments=instruments,
        rooms=rooms,
        units=units,
        settling_window_s=settling,
        escalate_to=escalate_to,
        mains_frequency_Hz=float(facility["facility"].get("mains_frequency_Hz", 50)),
        default_escalate_after_s=float(defaults.get("escalate_after_s", 900)),
        retention_days={
            "raw_days": 400.0,
            "minute_days": 800.0,
            "hour_days": None,
            **limits.get("retention", {}),
        },
        plausibility=plausibility,
        coverage=coverage,
        ingest=IngestOptions(**limits.get("ingest", {})),
        bands=bands,
    )


def _band_label(band: str | float) -> str:
    if isinstance(band, str):
        return band
    return f"{band:g}"


_CACHE: dict[tuple, EnvConfig] = {}


def _file_key(path: Path) -> tuple:
    try:
        stat = path.stat()
    except OSError:
        return (str(path), 0, 0, 0)
    return (str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino)


def load_env_config(config_dir: str | os.PathLike | None = None) -> EnvConfig:
    """Load facility.yaml + limits.yaml from ``config_dir`` (default: cryofac's config dir).

    Always the files as they are now: the parsed configuration is cached on each file's
    (mtime, size, inode), so a changed file (edited in place or replaced atomically) is
    read again on the next call, and a broken one raises :class:`ConfigError` (callers
    refuse: the gate never keeps judging by limits that are no longer in the file).
    """
    directory = Path(config_dir) if config_dir is not None else cfg.config_dir()
    facility_path, limits_path = directory / "facility.yaml", directory / "limits.yaml"
    key = tuple(_file_key(p) for p in (facility_path, limits_path))
    if key not in _CACHE:
        facility = cfg.load_facility(facility_path)
        limits = cfg.load_limits(limits_path)
        if len(_CACHE) > 32:  # old versions of edited files
            _CACHE.clear()
        _CACHE[key] = build_env_config(facility, limits, str(limits_path))
    return _CACHE[key]
