"""Who may see a run and download its files: a pure decision, no Flask, no database.

The rule (ARCHITECTURE.md, CONTRACT.md): members of the session's project see its
runs and download its files; facility staff see every run. Everyone else gets
*not found* — a 404, never a 403 — so that outsiders cannot even learn that a session
or a file exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Viewer:
    """The person asking: their user id, whether they are facility staff, their projects."""

    user_id: int | None
    is_staff: bool = False
    project_ids: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def of(cls, user_id: int | None, is_staff: bool, project_ids: Iterable[int]) -> Viewer:
        return cls(user_id, bool(is_staff), frozenset(int(p) for p in project_ids))


ANONYMOUS = Viewer(None)


def can_see_project_data(viewer: Viewer | None, project_id: int | None) -> bool:
    """True when ``viewer`` may see runs and download files of ``project_id``."""
    if viewer is None or viewer.user_id is None:
        return False
    if viewer.is_staff:
        return True
    return project_id is not None and int(project_id) in viewer.project_ids


def visible_status(viewer: Viewer | None, project_id: int | None, exists: bool = True) -> int:
    """HTTP status for a request on project data: 200 when allowed, else 404.

    Outsiders and missing objects are indistinguishable (both 404).
    """
    if not exists:
        return 404
    return 200 if can_see_project_data(viewer, project_id) else 404
