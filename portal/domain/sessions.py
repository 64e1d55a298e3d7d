"""The acquisition-session lifecycle: scheduled → ready → acquiring → processing → complete.

Any unfinished session may be *aborted*. Only operators (staff, technicians, admins)
move a session. Starting acquisition on an environment-gated instrument asks
``instrument_env.gate.evaluate_gate``; when the gate is closed — or instrument_env is
not installed, which fails closed — only staff may start anyway, with a written reason.
Every transition and override goes to the audit log.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from portal.domain import audit, permissions
from portal.domain.errors import (
    Forbidden,
    GateClosed,
    GateUnavailable,
    InvalidInput,
    InvalidTransition,
)
from portal.models import AcqSession, Instrument, User, utcnow
from portal.runs.progress import processing_summary

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "scheduled": ("ready", "aborted"),
    "ready": ("acquiring", "aborted"),
    "acquiring": ("processing", "aborted"),
    "processing": ("complete", "aborted"),
    "complete": (),
    "aborted": (),
}
log = logging.getLogger(__name__)
SESSION_FIELDS = ("state", "operator_id", "raw_dir", "run_dir", "started_at", "ended_at")


@dataclass(frozen=True)
class GateResult:
    """What the portal keeps of an ``instrument_env`` gate decision."""

    allowed: bool
    reasons: list[str] = field(default_factory=list)
    checked_at: datetime | None = None
    #: False when the gate could not judge (database silent or unreachable,
    #: configuration broken): refused with 503, not 409
    decided: bool = True


def default_gate(
    db: Session,
    instrument_id: str,
    at: datetime,
    *,
    config_dir: str | None = None,
    timeout_s: float | None = None,
) -> GateResult:
    """Ask instrument_env; fail closed when it is not installed or errs.

    ``config_dir``: the facility configuration (facility.yaml, limits.yaml) to judge by;
    default cryofac's own (``CRYOFAC_CONFIG_DIR`` or the embedded ``config/``).
    ``timeout_s``: bound on the decision's database work (default the gate's own).
    """
    try:
        from instrument_env.gate import evaluate_gate
        from instrument_env.limits import load_env_config
    except ImportError:
        return GateResult(
            False,
            ["environment monitoring (instrument_env.gate) is not installed; gate fails closed"],
            at,
        )
    # The gate only reads. Run it inside a savepoint that is always rolled back, so a
    # database error inside it (even one it catches itself) cannot poison our transaction.
    # A database that fails or does not answer breaks the savepoint's rollback too: that
    # error leaves here (the request then answers 503, see portal.api.common).
    savepoint = db.begin_nested()
    bound = {} if timeout_s is None else {"timeout_s": timeout_s}
    try:
        decision = evaluate_gate(db, instrument_id, at, config=load_env_config(config_dir), **bound)
    except Exception as exc:  # a broken monitor must not open the gate
        savepoint.rollback()
        message = str(exc).splitlines()[0] if str(exc) else ""
        return GateResult(
            False,
            [f"environment gate failed: {exc.__class__.__name__}: {message}"],
            at,
            decided=False,
        )
    savepoint.rollback()
    return GateResult(
        bool(decision.allowed),
        [str(r) for r in decision.reasons],
        getattr(decision, "checked_at", at),
        bool(getattr(decision, "decided", True)),
    )


def gate_for(
    config_dir: str | None, timeout_s: float | None = None
) -> Callable[[Session, str, datetime], GateResult]:
    """:func:`default_gate` judging by the configuration in ``config_dir`` (the portal's
    ``FACILITY_CONFIG_DIR``; None: cryofac's own), its database work bounded by
    ``timeout_s`` (the portal's ``ENV_GATE_TIMEOUT_S``)."""
    return functools.partial(default_gate, config_dir=config_dir, timeout_s=timeout_s)


def _record_env_override(
    db: Session,
    instrument_id: str,
    actor: User,
    reason: str,
    result: GateResult,
    now: datetime,
    gate: Callable,
) -> None:
    """Record the override in instrument_env too (``env_gate_overrides``), so the
    acquisition's environmental provenance shows that it started over a closed gate."""
    from instrument_env.gate import record_override
    from instrument_env.limits import load_env_config

    config_dir = getattr(gate, "keywords", {}).get("config_dir")
    savepoint = db.begin_nested()
    try:
        record_override(
            db,
            instrument_id,
            actor.username,
            reason,
            result,
            at=now,
            config=load_env_config(config_dir),
        )
    except Exception:  # the portal's audit log keeps the override regardless
        savepoint.rollback()
        log.warning("gate override of %s not recorded in instrument_env", instrument_id)
        return
    savepoint.commit()


def _locked(db: Session, session: AcqSession) -> AcqSession:
    """``session`` re-read with its row locked to the end of the transaction
    (``SELECT ... FOR UPDATE``; SQLite serialises writers already)."""
    import sqlalchemy as sa

    return db.scalar(
        sa.select(AcqSession)
        .where(AcqSession.id == session.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def transition(
    db: Session,
    actor: User,
    session: AcqSession,
    to_state: str,
    reason: str = "",
    override_gate: bool = False,
    now: datetime | None = None,
    gate: Callable[[Session, str, datetime], GateResult] = default_gate,
) -> GateResult | None:
    """Move ``session`` to ``to_state``; returns the gate result when the gate was asked.

    Raises :class:`InvalidTransition` (409) for a move the lifecycle does not allow,
    :class:`GateClosed` (409) when the environment gate refuses acquisition and no staff
    override was given (:class:`GateUnavailable`, 503, when it could not decide), :class:`Forbidden` when ``actor`` may not operate sessions.
    """
    permissions.require_operator(actor)
    now = now or utcnow()
    session = _locked(db, session)  # a concurrent move or cancellation goes first or waits
    if to_state not in TRANSITIONS.get(session.state, ()):
        raise InvalidTransition(
            f"session {session.id} is {session.state}; it cannot become {to_state}"
        )
    if to_state == "aborted" and not reason.strip():
        raise InvalidInput("aborting a session needs a reason")
    result = None
    if to_state == "acquiring":
        instrument = db.get(Instrument, session.instrument_id)
        if instrument is not None and instrument.environment_gated:
            result = gate(db, session.instrument_id, now)
            if not result.allowed:
                if not getattr(result, "decided", True) and not override_gate:
                    raise GateUnavailable(result.reasons or ["gate could not decide"])
                if not override_gate:
                    raise GateClosed(result.reasons or ["gate closed"])
                if not permissions.is_staff(actor):
                    raise Forbidden("only staff may override the environment gate")
                if len(reason.strip()) < 10:
                    raise InvalidInput("a gate override needs a written reason (10+ characters)")
                audit.record(
                    db,
                    actor,
                    "gate_override",
                    "session",
                    session.id,
                    {"gate_allowed": False, "gate_reasons": result.reasons},
                    {"state": "acquiring"},
                    reason,
                )
                _record_env_override(db, session.instrument_id, actor, reason, result, now, gate)
    before = audit.snapshot(session, SESSION_FIELDS)
    session.state = to_state
    if to_state == "acquiring":
        session.started_at = now
        session.operator_id = actor.id
    if to_state in ("complete", "aborted"):
        session.ended_at = now
    audit.record(
        db,
        actor,
        "transition",
        "session",
        session.id,
        before,
        audit.snapshot(session, SESSION_FIELDS),
        reason,
    )
    return result


def set_folders(
    db: Session,
    actor: User,
    session: AcqSession,
    raw_dir: str | None = None,
    run_dir: str | None = None,
) -> None:
    """Record the session's raw-data folder and processing run folder (operators only)."""
    permissions.require_operator(actor)
    before = audit.snapshot(session, SESSION_FIELDS)
    if raw_dir is not None:
        session.raw_dir = raw_dir
    if run_dir is not None:
        session.run_dir = run_dir
    audit.record(
        db, actor, "update", "session", session.id, before, audit.snapshot(session, SESSION_FIELDS)
    )


def as_dict(session: AcqSession) -> dict:
    booking = session.booking
    return {
        "id": session.id,
        "booking_id": session.booking_id,
        "instrument_id": session.instrument_id,
        "project_id": session.project_id,
        "state": session.state,
        "start": booking.start_at.isoformat(),
        "end": booking.end_at.isoformat(),
        "started_at": session.started_at.isoformat() if session.started_at else None,
        "ended_at": session.ended_at.isoformat() if session.ended_at else None,
        "operator": session.operator.public() if session.operator else None,
        "raw_dir": session.raw_dir,
        "run_dir": session.run_dir,
        "processing": processing_summary(session.run_dir),
        "allowed_transitions": list(TRANSITIONS[session.state]),
    }
