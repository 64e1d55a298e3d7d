"""Accounts: Argon2id password hashes, bearer tokens (stored as SHA-256), throttled log-in,
and the account lifecycle (password change, admin reset, deactivation, revocation).

Log-in attempts are slowed, never locked out (:mod:`portal.domain.login_throttle`), and
cost one Argon2 verification whether or not the account exists. Every browser session
carries the account's ``auth_epoch``; log-out, a password change or reset and a
deactivation bump it and delete the account's bearer tokens, so old cookies and tokens
stop working at their next request.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from functools import lru_cache

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from portal.domain import audit, login_throttle
from portal.domain.errors import InvalidInput, Unauthorized
from portal.domain.login_throttle import LoginPolicy
from portal.models import ROLES, ApiToken, LoginAttempt, User, utcnow

#: Checked for unknown or disabled users so that timing does not tell them apart.
_DUMMY_PASSWORD = "not-a-password-" + "x" * 16
MIN_PASSWORD_LENGTH = 8
DEFAULT_POLICY = LoginPolicy()
MAX_PASSWORD_LENGTH = 1024


@lru_cache(maxsize=8)
def _dummy_hash(time_cost: int, memory_cost: int, parallelism: int) -> str:
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
    return hasher.hash(_DUMMY_PASSWORD)


def dummy_hash(hasher: PasswordHasher) -> str:
    """A hash with ``hasher``'s parameters that no password verifies (computed once)."""
    return _dummy_hash(hasher.time_cost, hasher.memory_cost, hasher.parallelism)


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
    _check_password(password)
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


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at most {MAX_PASSWORD_LENGTH} characters")


def revoke_all(db: Session, user: User) -> int:
    """End every browser session and delete every bearer token of ``user`` (atomically).

    Returns the number of tokens deleted. The caller commits.
    """
    db.execute(sa.update(User).where(User.id == user.id).values(auth_epoch=User.auth_epoch + 1))
    deleted = db.execute(sa.delete(ApiToken).where(ApiToken.user_id == user.id)).rowcount or 0
    db.refresh(user, ["auth_epoch"])
    return deleted


def set_password(
    db: Session,
    hasher: PasswordHasher,
    user: User,
    password: str,
    actor: User | None = None,
    reset: bool = False,
) -> None:
    """Give ``user`` a new password and revoke their sessions and tokens.

    ``actor`` is who did it: the user themselves by default, an admin for a reset, or
    None with ``reset`` for the console (``cryofac portal set-password``).
    """
    _check_password(password)
    user.password_hash = hasher.hash(password)
    db.flush()
    tokens = revoke_all(db, user)
    if actor is None and not reset:
        actor = user
    own = actor is not None and actor.id == user.id and not reset
    action = "change_password" if own else "reset_password"
    audit.record(db, actor, action, "user", user.id, after={"tokens_revoked": tokens})


def change_password(
    db: Session,
    hasher: PasswordHasher,
    user: User,
    current: str,
    new: str,
    remote_addr: str,
    policy: LoginPolicy = DEFAULT_POLICY,
) -> None:
    """The user's own change: ``current`` is checked like a log-in (throttled)."""
    _check_password(new)
    authenticate(db, hasher, user.username, current, remote_addr, policy, audit_login=False)
    set_password(db, hasher, user, new)


def set_active(db: Session, admin: User, user: User, active: bool, reason: str = "") -> None:
    """Deactivate (revoking sessions and tokens at once) or reactivate ``user``."""
    if admin.id == user.id and not active:
        raise InvalidInput("you cannot deactivate your own account")
    before = {"active": user.active}
    user.active = active
    db.flush()
    tokens = revoke_all(db, user) if not active else 0
    audit.record(
        db,
        admin,
        "deactivate" if not active else "activate",
        "user",
        user.id,
        before,
        {"active": active, "tokens_revoked": tokens},
        reason,
    )


def log_out(db: Session, user: User) -> None:
    """End every browser session of ``user`` (cookies carry the old epoch from now on)."""
    db.execute(sa.update(User).where(User.id == user.id).values(auth_epoch=User.auth_epoch + 1))
    db.refresh(user, ["auth_epoch"])
    audit.record(db, user, "logout", "user", user.id)


def reset_feed_links(db: Session, user: User) -> None:
    """Revoke every calendar-feed link issued to ``user`` so far."""
    db.execute(
        sa.update(User).where(User.id == user.id).values(feed_generation=User.feed_generation + 1)
    )
    db.refresh(user, ["feed_generation"])
    audit.record(db, user, "reset_feed_links", "user", user.id)


def authenticate(
    db: Session,
    hasher: PasswordHasher,
    username: str,
    password: str,
    remote_addr: str,
    policy: LoginPolicy = DEFAULT_POLICY,
    now: datetime | None = None,
    audit_login: bool = True,
    device: str | None = None,
) -> User:
    """The active user with these credentials; every attempt is throttled and recorded.

    Ends the caller's transaction first (the throttle's reservation is committed in a
    transaction of its own before the password is checked). Raises
    :class:`TooManyAttempts` while the account or address must wait,
    :class:`Unauthorized` otherwise. Known, unknown and disabled accounts cost the
    same: one Argon2 verification. The caller commits (the attempt is recorded).
    ``device``: a verified id of a browser this account logged in from before
    (see :func:`portal.domain.login_throttle.reserve`).
    """
    now = now or utcnow()
    # NUL cannot be stored (PostgreSQL text); such a name matches no account anyway
    username = (username or "")[:80].replace("\0", "\ufffd")
    remote_addr = (remote_addr or "unknown")[:64].replace("\0", "\ufffd")
    db.commit()
    bind = db.get_bind()
    login_throttle.reserve(bind, username, remote_addr, policy, now, device)
    user = db.scalar(sa.select(User).where(User.username == username))
    db.commit()  # hold no lock (SQLite: the write lock) during the slow verification
    known = user is not None and user.active
    ok = False
    try:
        if len(password) > MAX_PASSWORD_LENGTH:
            password = password[:MAX_PASSWORD_LENGTH] + "\0"  # never verifies, same cost
        ok = hasher.verify(user.password_hash if known else dummy_hash(hasher), password)
    except (VerificationError, InvalidHashError):
        ok = False
    ok = ok and known
    if ok:
        login_throttle.succeeded(bind, username, remote_addr, device)
    db.add(LoginAttempt(username=username, remote_addr=remote_addr, at=now, success=ok))
    if not ok or user is None:
        raise Unauthorized("wrong username or password")
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    if audit_login:
        audit.record(db, user, "login", "user", user.id, after={"address": remote_addr})
    return user


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(db: Session, user: User, ttl_h: float = 24.0) -> str:
    """A new bearer token for ``user`` (returned once; only its hash is stored; audited)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiToken(
        user_id=user.id,
        token_sha256=_sha256(token),
        created_at=now,
        expires_at=now + timedelta(hours=ttl_h),
    )
    db.add(row)
    db.flush()
    audit.record(
        db, user, "create_token", "api_token", row.id, after={"expires_at": row.expires_at}
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


def revoke_token(db: Session, token: str, actor: User | None = None) -> None:
    """Forget a bearer token (log out of the API); unknown tokens are ignored; audited."""
    row = db.scalar(sa.select(ApiToken).where(ApiToken.token_sha256 == _sha256(token)))
    if row is None:
        return
    db.delete(row)
    audit.record(db, actor, "revoke_token", "api_token", row.id)
