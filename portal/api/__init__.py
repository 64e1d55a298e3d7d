"""The JSON API under ``/api/v1`` (CONTRACT.md): bearer tokens, JSON errors, real status codes.

:data:`bp` and the helpers every route module uses live in :mod:`portal.api.common`;
importing this package registers every route module on it.
"""

from __future__ import annotations

from portal.api import (  # noqa: F401  (routes)
    bookings,
    env,
    env_spec,  # noqa: F401  (the environment routes' declarations)
    instruments,
    sessions,
    tokens,
)
from portal.api.common import bp

__all__ = ["bp"]
