"""Live processing-run pages: one page per session, an overview of all runs.

The page is server-rendered; ``static/live/run.js`` polls ``…/run/status.json`` every
few seconds and refreshes the counters and the plots (whose URLs carry the run
folder's modification time, so the browser refetches a plot only when it changed).
Researchers see their projects' runs; staff and technicians see every run; anyone
else gets 404 on every URL here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    render_template,
    send_file,
)

from portal import downloads_service as service
from portal.db import get_db
from portal.domain.permissions import is_operator, project_ids_of, visible_session
from portal.domain.timezones import local_text
from portal.models import AcqSession, Instrument, Project
from portal.runs import plots
from portal.runs.folder import RunFolder, read_classes2d
from portal.runs.progress import summarize_run
from portal.runs.reconstruction import result_warnings, running_reconstruction
from portal.views.common import login_required

bp = Blueprint("runs", __name__)

PLOT_GROUPS = [
    ("drift", "Drift"),
    ("defocus", "Defocus"),
    ("astigmatism", "Astigmatism"),
    ("ctf_resolution", "CTF fit resolution"),
    ("particles", "Particles per micrograph"),
]
#: Refresh period of a running run's page (s).
REFRESH_S = 5


def _fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "—"
    text = f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"
    return f"{text} {unit}".strip()


def run_status(session: AcqSession, run: RunFolder | None) -> dict[str, Any]:
    """What the live page shows, as JSON-ready values (counts, rates per hour, Å)."""
    if run is None:
        return {"session_id": session.id, "has_run": False, "state": "no run yet", "stamp": 0}
    s = run.summary
    stalled = s.stalled(datetime.now(UTC), current_app.config.get("RUN_STALL_AFTER_S", 900.0))
    pace = {True: "keeping up", False: "falling behind", None: "—"}[s.keeping_up]
    if stalled:
        minutes = (datetime.now(UTC) - s.updated_at).total_seconds() / 60
        pace = f"no update for {minutes:,.0f} min"
    ok = [m for m in run.movies if m.ok]
    latest = max(ok, key=lambda m: m.processed_at or datetime.min.replace(tzinfo=UTC), default=None)
    summary = summarize_run(run)
    # the map's warnings: the summary's, and the finished reconstruction's own (the
    # summary is rewritten only after the workflow's next pass)
    summary["warnings"] += [w for w in result_warnings(run.path) if w not in summary["warnings"]]
    recon = running_reconstruction(run.path)
    stall_s = current_app.config.get("RUN_STALL_AFTER_S", 900.0)
    return {
        "session_id": session.id,
        "has_run": True,
        **summary,
        "reconstruction": None
        if recon is None
        else {
            "stage": recon.stage,
            "stage_text": recon.stage_text,
            "stage_fraction": recon.stage_fraction,
            "fraction": recon.fraction,
            "eta_s": recon.eta_s,
            "particles": recon.particles,
            "message": recon.message,
            "updated_at": recon.updated_at.isoformat() if recon.updated_at else None,
        },
        "stalled": stalled,
        "keeping_up": False if stalled else s.keeping_up,
        "latest_movie": latest.movie if latest else None,
        "stamp": int(run.mtime() * 1000),
        "display": {
            "movies_seen": _fmt(s.movies_seen),
            "movies_processed": _fmt(s.movies_processed),
            "movies_failed": _fmt(s.movies_failed),
            "particles": _fmt(s.particles),
            "acquisition_rate_per_h": _fmt(s.acquisition_rate_per_h, 0, "/h"),
            "processing_rate_per_h": _fmt(s.processing_rate_per_h, 0, "/h"),
            "resolution_A": _fmt(s.resolution_A, 2, "Å"),
            "backlog": _fmt(s.backlog),
            "batches": f"{s.batches_done} / {s.batches_total}",
            "keeping_up": pace,
            "updated_at": local_text(s.updated_at, seconds=True),
            "reconstruction": recon.describe(datetime.now(UTC), stall_s) if recon else "",
        },
    }


@bp.get("/runs")
@login_required
def overview():
    db = get_db()
    query = (
        sa.select(AcqSession, Project, Instrument)
        .join(Project, Project.id == AcqSession.project_id)
        .join(Instrument, Instrument.id == AcqSession.instrument_id)
        .order_by(AcqSession.id.desc())
    )
    if not is_operator(g.user):
        query = query.where(AcqSession.project_id.in_(project_ids_of(db, g.user) or {-1}))
    rows = []
    for session, project, instrument in db.execute(query).all():
        run = service.load_run(session)
        rows.append(
            {
                "session": session,
                "project": project,
                "instrument": instrument,
                "status": run_status(session, run),
            }
        )
    return render_template("runs/overview.html", rows=rows, all_runs=is_operator(g.user))


def _session_and_run(session_id: int) -> tuple[AcqSession, RunFolder | None]:
    session = visible_session(get_db(), g.user, session_id)
    run = service.load_run(session)
    return session, run


@bp.get("/sessions/<int:session_id>/run")
@login_required
def run_page(session_id: int):
    session, run = _session_and_run(session_id)
    db = get_db()
    project = db.get(Project, session.project_id)
    instrument = db.get(Instrument, session.instrument_id)
    status = run_status(session, run)
    classes_path = run.output_path("classes2d") if run is not None else None
    class_count = None
    if classes_path is not None and classes_path.suffix.lower() != ".png":
        try:
            class_count = len(read_classes2d(classes_path))
        except Exception:  # a half-written stack: show no classes rather than fail
            classes_path = None
    mic, ps = run.latest_thumbnails() if run else (None, None)
    files = service.downloadables(session)
    return render_template(
        "runs/run.html",
        session=session,
        project=project,
        instrument=instrument,
        run=run,
        status=status,
        plot_groups=PLOT_GROUPS,
        has_classes=classes_path is not None,
        class_count=class_count,
        has_mic=mic is not None,
        has_ps=ps is not None,
        files=files,
        refresh_s=current_app.config.get("RUN_REFRESH_S", REFRESH_S),
    )


@bp.get("/sessions/<int:session_id>/run/status.json")
@login_required
def run_status_json(session_id: int):
    session, run = _session_and_run(session_id)
    response = jsonify(run_status(session, run))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/sessions/<int:session_id>/run/plots/<name>")
@login_required
def plot(session_id: int, name: str):
    _session, run = _session_and_run(session_id)
    if run is None or name not in plots.PLOT_NAMES:
        abort(404)
    data, media_type = plots.render(run, name)
    response = Response(data, mimetype=media_type)
    response.headers["Cache-Control"] = "private, max-age=3600"
    # Plots are images: no scripts, inline styles of the SVG itself are fine.
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return response


@bp.get("/sessions/<int:session_id>/run/thumbnails/<kind>")
@login_required
def thumbnail(session_id: int, kind: str):
    _session, run = _session_and_run(session_id)
    if run is None or kind not in ("mic", "ps"):
        abort(404)
    mic, ps = run.latest_thumbnails()
    path = mic if kind == "mic" else ps
    if path is None:
        abort(404)
    response = send_file(path, mimetype="image/png", max_age=0)
    response.headers["Cache-Control"] = "private, no-cache"
    return response
