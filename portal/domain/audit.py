"""The audit log: every change, who made it, when, and the values before and after."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session

from portal.models import AuditEntry, User


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def snapshot(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The listed attributes of ``obj`` as JSON-ready values."""
    return {name: _jsonable(getattr(obj, name)) for name in fields}


def record(
    db: Session,
    actor: User | None,
    action: str,
    entity: str,
    entity_id: Any,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> AuditEntry:
    """Add one audit entry to the current transaction (committed with the change itself)."""
    entry = AuditEntry(
        actor_id=actor.id if actor is not None else None,
        action=action,
        entity=entity,
        entity_id=str(entity_id),
        before=_jsonable(before) if before is not None else None,
        after=_jsonable(after) if after is not None else None,
        reason=reason,
    )
    db.add(entry)
    return entry
