"""The facility configuration this portal runs with (``FACILITY_CONFIG_DIR``; default:
cryofac's embedded ``config/``), as the files are now: instrument_env caches the parsed
files on their (mtime, size, inode), so an edited ``limits.yaml`` applies to the next
request (the same limits as the CLI and session start), and a broken one raises."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from instrument_env.limits import EnvConfig


def env_config() -> EnvConfig:
    """The environment limits and sensors (instrument_env) of this portal's facility."""
    from instrument_env.limits import load_env_config

    return load_env_config(current_app.config.get("FACILITY_CONFIG_DIR"))
