"""The facility configuration this portal runs with (``FACILITY_CONFIG_DIR``; default:
cryofac's embedded ``config/``), as the files are now: instrument_env caches the parsed
files on their (mtime, size, inode), so an edited ``limits.yaml`` applies to the next
request (the same limits as the CLI and session start), and a broken one raises.

Also the other per-app settings that views and API handlers read from the running app:
the password hasher and the environment gate that session starts are judged by."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from argon2 import PasswordHasher
    from sqlalchemy.orm import Session

    from instrument_env.limits import EnvConfig
    from portal.domain.sessions import GateResult


def env_config() -> EnvConfig:
    """The environment limits and sensors (instrument_env) of this portal's facility."""
    from instrument_env.limits import load_env_config

    return load_env_config(current_app.config.get("FACILITY_CONFIG_DIR"))


def password_hasher() -> PasswordHasher:
    """The app's Argon2 hasher (its cost parameters come from the app's configuration)."""
    return current_app.extensions["cryofac.hasher"]


def session_gate() -> Callable[[Session, str, datetime], GateResult]:
    """The environment gate a session start is judged by: the facility's configuration
    (``FACILITY_CONFIG_DIR``), its database work bounded by ``ENV_GATE_TIMEOUT_S``."""
    from portal.domain.sessions import gate_for

    return gate_for(
        current_app.config.get("FACILITY_CONFIG_DIR"),
        current_app.config.get("ENV_GATE_TIMEOUT_S"),
    )
