"""Load and validate cryofac's YAML configuration.

Every file is validated against a JSON Schema in ``schemas/`` beside this module and then
checked for cross-references (an instrument's room exists, ids are unique, ...).
Every problem is raised as :class:`~cryofac.errors.ConfigError` naming the file,
the dotted key and the problem, e.g.::

    config/facility.yaml: instruments[0].booking.min_duration_h: -1 is not positive

The default configuration (``facility.yaml``, ``limits.yaml``, ``pipeline.yaml``) and the
schemas are package data beside this module, so a wheel install carries them; set
``CRYOFAC_CONFIG_DIR`` (or pass a path) to use another facility description.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cryofac.errors import ConfigError

#: This package's folder: the embedded default configuration and its schemas.
PACKAGE_DIR = Path(__file__).resolve().parent

#: Configuration kinds and the schema each is validated against.
KINDS = ("facility", "pipeline", "limits")


def config_dir() -> Path:
    """The directory holding the default ``facility.yaml``, ``limits.yaml`` and ``pipeline.yaml``."""
    return Path(os.environ.get("CRYOFAC_CONFIG_DIR", PACKAGE_DIR))


def instance_dir() -> Path:
    """Where the portal and ``cryofac env`` keep local state (SQLite database, secret key).

    ``CRYOFAC_INSTANCE_DIR`` when set; otherwise ``instance/`` of a source checkout, or
    ``<prefix>/var/cryofac-instance`` of an installed wheel (Flask's own rule, so the
    portal and ``cryofac env`` find the same default database).
    """
    if os.environ.get("CRYOFAC_INSTANCE_DIR"):
        return Path(os.environ["CRYOFAC_INSTANCE_DIR"])
    source_root = PACKAGE_DIR.parent.parent
    if (source_root / "setup.cfg").is_file() and (source_root / "portal").is_dir():
        return source_root / "instance"
    return Path(sys.prefix) / "var" / "cryofac-instance"


def default_database_url() -> str:
    """The portal's default database: SQLite in :func:`instance_dir`."""
    return f"sqlite:///{instance_dir() / 'portal.sqlite3'}"


def schema_dir() -> Path:
    """The JSON Schemas (YAML) every configuration file is validated against."""
    return PACKAGE_DIR / "schemas"


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file; errors name the file and, where known, the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read ({exc.__class__.__name__})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(str(path), where, f"invalid YAML: {problem}") from None


def _dotted(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


@cache
def _validator(kind: str):
    import jsonschema

    schema = read_yaml(schema_dir() / f"{kind}.schema.yaml")
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _describe(error) -> tuple[str, str]:
    """Turn a jsonschema error into (dotted key, problem) in plain words."""
    key = list(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        name = extra[0] if extra else "?"
        return _dotted([*key, name]), f"unknown key {name!r} (allowed here: {allowed})"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return _dotted([*key, missing]), "required key is missing"
    if error.validator == "exclusiveMinimum":
        return _dotted(key), f"{error.instance!r} must be greater than {error.validator_value}"
    if error.validator == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        return _dotted(key), f"{error.instance!r} is not one of {allowed}"
    return _dotted(key), error.message


def validate(kind: str, data: Any, source: str) -> dict:
    """Validate ``data`` (already parsed) as configuration ``kind``; return it unchanged.

    Raises :class:`ConfigError` for the first problem found (in document order).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown configuration kind {kind!r}")
    if data is None:
        raise ConfigError(source, "", "file is empty")
    _check_finite(data, [], source)
    errors = sorted(
        _validator(kind).iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]
    )
    if errors:
        # Prefer the most specific error (deepest path) among those at the first location.
        best = max(
            errors[:1]
            + [e for e in errors if list(e.absolute_path)[:1] == list(errors[0].absolute_path)[:1]],
            key=lambda e: len(e.absolute_path),
        )
        key, problem = _describe(best)
        raise ConfigError(source, key, problem)
    if kind == "facility":
        _check_facility_references(data, source)
    return data


def _check_finite(data: Any, path: list, source: str) -> None:
    """Refuse NaN and infinities anywhere (YAML's ``.nan``/``.inf``): a NaN limit would
    silently disable its rule, since every comparison with it is false."""
    if isinstance(data, float) and not math.isfinite(data):
        raise ConfigError(source, _dotted(path), f"{data!r} is not a finite number")
    if isinstance(data, Mapping):
        for key, value in data.items():
            _check_finite(value, [*path, key], source)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            _check_finite(value, [*path, index], source)


def _unique(items: list[Mapping], section: str, source: str) -> set[str]:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item["id"] in seen:
            raise ConfigError(source, f"{section}[{index}].id", f"duplicate id {item['id']!r}")
        seen.add(item["id"])
    return seen


def _check_facility_references(data: Mapping, source: str) -> None:
    rooms = _unique(data["rooms"], "rooms", source)
    _unique(data["instruments"], "instruments", source)
    _unique(data["sensors"], "sensors", source)
    for section in ("instruments", "sensors"):
        for index, item in enumerate(data[section]):
            if item["room"] not in rooms:
                raise ConfigError(
                    source,
                    f"{section}[{index}].room",
                    f"unknown room {item['room']!r} (rooms: {', '.join(sorted(rooms))})",
                )
    for index, inst in enumerate(data["instruments"]):
        booking = inst["booking"]
        if booking["min_duration_h"] > booking["max_duration_h"]:
            raise ConfigError(
                source,
                f"instruments[{index}].booking.min_duration_h",
                "is larger than max_duration_h",
            )
        if inst["kind"] == "microscope" and "voltage_kV" not in inst:
            raise ConfigError(
                source, f"instruments[{index}].voltage_kV", "required for a microscope"
            )


def load(kind: str, path: str | os.PathLike | None = None) -> dict:
    """Read and validate one configuration file (the default one when ``path`` is None)."""
    path = Path(path) if path is not None else config_dir() / f"{kind}.yaml"
    return validate(kind, read_yaml(path), str(path))


def load_facility(path: str | os.PathLike | None = None) -> dict:
    """The facility description: rooms, instruments, sensors, booking rules."""
    return load("facility", path)


def load_limits(path: str | os.PathLike | None = None) -> dict:
    """Room limits and alarm rules (cross-checked against the facility by instrument_env)."""
    return load("limits", path)


def load_pipeline(path: str | os.PathLike | None = None, overrides: Mapping | None = None) -> dict:
    """Pipeline defaults, with ``overrides`` (e.g. a per-acquisition file) merged section by section."""
    data = load("pipeline", path)
    if overrides:
        merged = {section: dict(values) for section, values in data.items()}
        for section, values in overrides.items():
            merged.setdefault(section, {}).update(values or {})
        data = validate("pipeline", merged, "pipeline overrides")
    return data
