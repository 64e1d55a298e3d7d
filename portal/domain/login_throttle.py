"""Progressive log-in delays, counted atomically in the database (no hard lock-out).

Every password check first *reserves* an attempt for two keys, the account name
(``user:NAME``) and the client address (``addr:IP``), in one short transaction of its
own that locks both rows (``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE``
on SQLite): the reservation counts as a failure and sets the earliest time of the
next attempt, so forty concurrent guesses see each other's reservations and at most
``free_failures`` of them are checked before the first delay applies. A success then
clears the account's count (and gives the address its reservation back).

The delay after ``n`` failures is 0 while ``n < free_failures`` and
``base_delay_s * 2 ** (n - free_failures)`` after, capped at ``max_delay_s``: a
stranger who guesses wrong five times makes the owner wait about a second, not
fifteen minutes, while a guesser is slowed to one try per ``max_delay_s``.
Failures are forgotten after ``forget_after_min`` minutes without one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from portal.domain.errors import TooManyAttempts
from portal.models import LoginThrottle


@dataclass(frozen=True)
class LoginPolicy:
    """How log-in failures slow further attempts (seconds and minutes as named)."""

    free_failures: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0
    forget_after_min: float = 60.0
    #: An address gets this many times the free failures of an account.
    address_factor: int = 4

    def delay_s(self, failures: int, free: int | None = None) -> float:
        """Seconds to wait after ``failures`` consecutive failures (0 while under ``free``)."""
        free = self.free_failures if free is None else free
        if failures < free:
            return 0.0
        exponent = min(failures - free, 62)
        return min(self.base_delay_s * 2.0**exponent, self.max_delay_s)


def user_key(username: str) -> str:
    return "user:" + username[:150]


def address_key(remote_addr: str) -> str:
    return "addr:" + remote_addr[:150]


def device_key(device: str) -> str:
    return "device:" + device[:150]


def _account_key(username: str, device: str | None) -> str:
    return device_key(device) if device else user_key(username)


def _insert_missing(db: Session, keys: list[str]) -> None:
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    rows = [{"key": key, "failures": 0} for key in keys]
    db.execute(insert(LoginThrottle).values(rows).on_conflict_do_nothing(index_elements=["key"]))


def reserve(
    bind: sa.Engine | sa.Connection,
    username: str,
    remote_addr: str,
    policy: LoginPolicy,
    now: datetime,
    device: str | None = None,
) -> None:
    """Count one attempt for the account and the address, or refuse it.

    Runs and commits its own transaction on ``bind`` (so the reservation is visible to
    concurrent attempts before the slow password check starts). Raises
    :class:`TooManyAttempts` (nothing counted) while either key must still wait.

    ``device``: the id of a browser this account has logged in from before (a signed
    cookie the caller checked). Its attempts are counted on the device instead of the
    account, so strangers' failures never delay the owner on their own browser, while
    wrong guesses from that browser are slowed like any others.
    """
    keys = sorted([_account_key(username, device), address_key(remote_addr)])  # lock order
    with Session(bind) as db, db.begin():
        _insert_missing(db, keys)
        rows = {
            row.key: row
            for row in db.scalars(
                sa.select(LoginThrottle).where(LoginThrottle.key.in_(keys)).with_for_update()
            )
        }
        forget = timedelta(minutes=policy.forget_after_min)
        wait_s = 0.0
        for row in rows.values():
            if row.last_failure_at is not None and now - row.last_failure_at > forget:
                row.failures, row.next_at = 0, None
            if row.next_at is not None and row.next_at > now:
                wait_s = max(wait_s, (row.next_at - now).total_seconds())
        if wait_s > 0:
            raise TooManyAttempts(
                f"too many failed log-ins; try again in {math.ceil(wait_s)} s",
                retry_after_s=math.ceil(wait_s),
            )
        for key, row in rows.items():
            free = policy.free_failures
            if key.startswith("addr:"):
                free *= policy.address_factor
            row.failures += 1
            row.last_failure_at = now
            delay_s = policy.delay_s(row.failures, free)
            # no delay: no time stored (a concurrent attempt stamped a moment earlier
            # must not find itself "too early")
            row.next_at = now + timedelta(seconds=delay_s) if delay_s > 0 else None


def succeeded(
    bind: sa.Engine | sa.Connection, username: str, remote_addr: str, device: str | None = None
) -> None:
    """The reserved attempt was right: clear the account (and device), return the address's
    reservation."""
    keys = [user_key(username)] + ([device_key(device)] if device else [])
    with Session(bind) as db, db.begin():
        db.execute(
            sa.update(LoginThrottle)
            .where(LoginThrottle.key.in_(keys))
            .values(failures=0, next_at=None, last_failure_at=None)
        )
        db.execute(
            sa.update(LoginThrottle)
            .where(LoginThrottle.key == address_key(remote_addr), LoginThrottle.failures > 0)
            .values(failures=LoginThrottle.failures - 1)
        )


def prune(db: Session, now: datetime, policy: LoginPolicy) -> int:
    """Delete rows whose failures are forgotten (keeps the table small); returns the count."""
    cutoff = now - timedelta(minutes=policy.forget_after_min)
    result = db.execute(
        sa.delete(LoginThrottle).where(
            sa.or_(LoginThrottle.last_failure_at.is_(None), LoginThrottle.last_failure_at < cutoff)
        )
    )
    return result.rowcount or 0


def policy_from_config(config: Mapping[str, Any]) -> LoginPolicy:
    """The policy set by ``LOGIN_MAX_FAILURES``, ``LOGIN_BASE_DELAY_S``,
    ``LOGIN_MAX_DELAY_S`` and ``LOGIN_WINDOW_MIN`` (minutes until failures are forgotten)."""
    defaults = LoginPolicy()
    return LoginPolicy(
        free_failures=int(config.get("LOGIN_MAX_FAILURES", defaults.free_failures)),
        base_delay_s=float(config.get("LOGIN_BASE_DELAY_S", defaults.base_delay_s)),
        max_delay_s=float(config.get("LOGIN_MAX_DELAY_S", defaults.max_delay_s)),
        forget_after_min=float(config.get("LOGIN_WINDOW_MIN", defaults.forget_after_min)),
    )
