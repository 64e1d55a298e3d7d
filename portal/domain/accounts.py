"""Accounts: Argon2id password hashes, bearer tokens (stored as SHA-256), rate-limited login.

The login limiter keeps its state in the database (``login_attempts``) so it holds
across worker processes: after ``max_failures`` failed attempts for one username, or
``4 * max_failures`` from one address, within ``window_min`` minutes, further attempts
are refused with :class:`TooManyAttempts` until the window has passed.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from portal.domain import audit
from portal.domain.errors import InvalidInput, TooManyAttempts, Unauthorized
from portal.models import ROLES, ApiToken, LoginAttempt, User, utcnow

#: A password hash that never verifies, checked for unknown users so timing does not tell.
_DUMMY_PASSWORD = "not-a-password-" + "x" * 16


@dataclass(frozen=True)
class LoginPolicy:
    max_failures: int = 5
    window_min: float = 15.0


def password_hasher(time_cost: int = 3, memory_kib: int = 65536) -> PasswordHasher:
    """Argon2id with the given cost (tests use a cheap one)."""
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)


def create_user(
    db: Session,
    hasher: PasswordHasher,
    username: str,
    password: str,
    role: str,
    full_name: str = "",
    email: str = "",
    actor: User | None = None,
) -> User:
    """Add a user with a hashed password; raises :class:`InvalidInput` for a bad role or name."""
    username = username.strip()
    if not username or len(username) > 80:
        raise InvalidInput("username must be 1-80 characters")
    if role not in ROLES:
        raise InvalidInput(f"role {role!r} is not one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise InvalidInput("password must be at least 8 characters")
    if db.scalar(sa.select(User.id).where(User.username == username)) is not None:
        raise InvalidInput(f"user {username!r} already exists")
    user = User(
        username=username,
        password_hash=hasher.hash(password),
        role=role,
        full_name=full_name or username,
        email=email,
        active=True,
    )
    db.add(user)
    db.flush()
    audit.record(db, actor, "create", "user", user.id, after={"username": username, "role": role})
    return user


def set_password(db: Session, hasher: PasswordHasher, user: User, password: str) -> None:
    if len(password) < 8:
        raise InvalidInput("password must be at least 8 characters")
    user.password_hash = hasher.hash(password)
    audit.record(db, user, "set_password", "user", user.id)


def authenticate(
    db: Session,
    hasher: PasswordHasher,
    username: str,
    password: str,
    remote_addr: str,
    policy: LoginPolicy = LoginPolicy(),
    now: datetime | None = None,
) -> User:
    """The active user with these credentials; every attempt is recorded and rate-limited.

    Raises :class:`TooManyAttempts` when throttled, :class:`Unauthorized` otherwise.
    The caller commits (so failed attempts are kept).
    """
    now = now or utcnow()
    since = now - timedelta(minutes=policy.window_min)
    username = (username or "")[:80]
    remote_addr = (remote_addr or "unknown")[:64]
    failures_user = db.scalar(
        sa.select(sa.func.count(LoginAttempt.id)).where(
            LoginAttempt.username == username,
            LoginAttempt.at >= since,
            LoginAttempt.success.is_(False),
        )
    )
    failures_addr = db.scalar(
        sa.select(sa.func.count(LoginAttempt.id)).where(
            LoginAttempt.remote_addr == remote_addr,
            LoginAttempt.at >= since,
            LoginAttempt.success.is_(False),
        )
    )
    if failures_user >= policy.max_failures or failures_addr >= 4 * policy.max_failures:
        raise TooManyAttempts(
            f"too many failed log-ins; try again in {policy.window_min:g} minutes"
        )
    user = db.scalar(sa.select(User).where(User.username == username))
    ok = False
    try:
        if user is None or not user.active:
            hasher.verify(hasher.hash(_DUMMY_PASSWORD), password + "\0")
        else:
            ok = hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        ok = False
    db.add(LoginAttempt(username=username, remote_addr=remote_addr, at=now, success=ok))
    if not ok or user is None:
        raise Unauthorized("wrong username or password")
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    return user


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(db: Session, user: User, ttl_h: float = 24.0) -> str:
    """A new bearer token for ``user`` (returned once; only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    db.add(
        ApiToken(
            user_id=user.id,
            token_sha256=_sha256(token),
            created_at=now,
            expires_at=now + timedelta(hours=ttl_h),
        )
    )
    return token


_TOKEN_QUERY = (  # built once: the bearer-token check runs on every API request
    sa.select(ApiToken, User)
    .join(User, ApiToken.user_id == User.id)
    .where(ApiToken.token_sha256 == sa.bindparam("sha256"))
)


def user_for_token(db: Session, token: str) -> User:
    """The active user holding ``token``; :class:`Unauthorized` when unknown or expired."""
    row = db.execute(_TOKEN_QUERY, {"sha256": _sha256(token)}).first()
    if row is None:
        raise Unauthorized("invalid bearer token")
    api_token, user = row
    if api_token.expires_at <= utcnow():
        raise Unauthorized("bearer token expired")
    if not user.active:
        raise Unauthorized("account disabled")
    return user


def revoke_token(db: Session, token: str) -> None:
    """Forget a bearer token (log out of the API); unknown tokens are ignored."""
    db.execute(sa.delete(ApiToken).where(ApiToken.token_sha256 == _sha256(token)))
