"""The facility configuration this portal runs with (``FACILITY_CONFIG_DIR``; default:
cryofac's embedded ``config/``), read once per application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from instrument_env.limits import EnvConfig


def env_config() -> EnvConfig:
    """The environment limits and sensors (instrument_env) of this portal's facility."""
    from instrument_env.limits import load_env_config

    config = current_app.extensions.get("cryofac.env_config")
    if config is None:
        config = load_env_config(current_app.config.get("FACILITY_CONFIG_DIR"))
        current_app.extensions["cryofac.env_config"] = config
    return config
