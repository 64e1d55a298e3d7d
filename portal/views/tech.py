"""Technician view: every room's readings against limits, alarms, charts, gate states.

All facts come from :mod:`instrument_env` (readings, rollups, alarms, gate); this module
only arranges them. Staff and technicians only.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, url_for

from portal.db import get_db
from portal.domain.permissions import require_operator
from portal.facility import env_config
from portal.views.common import login_required

if TYPE_CHECKING:
    from instrument_env.conditions import VibrationClass

bp = Blueprint("tech", __name__, url_prefix="/tech")

SPANS = {"24h": (timedelta(hours=24), 60), "7d": (timedelta(days=7), 3600)}


@dataclass
class ChannelState:
    """The latest judged value of one rule's channel, against its levels."""

    rule_id: str
    label: str
    kind: str
    unit: str
    value: float | None
    warning: float | None
    limit: float
    status: str  # ok | warning | critical | stale | no data
    age_s: float | None


@dataclass
class RoomState:
    id: str
    name: str
    channels: list[ChannelState] = field(default_factory=list)
    charts: list[tuple[str, str]] = field(default_factory=list)  # (rule id, channel label)
    #: the VC class of each vibration sensor's latest spectrum
    vibration: list[VibrationClass] = field(default_factory=list)

    @property
    def status(self) -> str:
        order = ["ok", "warning", "stale", "no data", "critical"]
        return max((c.status for c in self.channels), key=order.index, default="no data")


def _judge(rule, value: float) -> str:
    """``critical`` beyond the limit, ``warning`` beyond the warning level, else ``ok``
    (the alarm engine's test, :func:`instrument_env.conditions.breaches`)."""
    from instrument_env.conditions import breaches

    if breaches(rule, value, rule.limit):
        return "critical"
    if rule.warning is not None and breaches(rule, value, rule.warning):
        return "warning"
    return "ok"


def room_states(db, config, now: datetime) -> list[RoomState]:
    """Each configured room with the latest value of each rule against its limits."""
    from instrument_env.conditions import judged_series, vibration_class
    from instrument_env.models import to_us
    from instrument_env.storage import last_reading_of_channel_us

    now_us = to_us(now)
    rooms = []
    for room_id, room_name in sorted(config.rooms.items()):
        room = RoomState(room_id, room_name)
        for rule in config.rules_for_room(room_id):
            sensor = config.sensors.get(rule.sensor)
            stale_s = sensor.stale_after_s if sensor else 600.0
            last_us = last_reading_of_channel_us(db, rule.sensor, rule.quantity, now_us)
            age_s = (now_us - last_us) / 1e6 if last_us is not None else None
            value = None
            if last_us is not None:
                lookback = int(max(stale_s, 60.0) * 1e6)
                judged = judged_series(db, rule, last_us - lookback, last_us)
                if len(judged):
                    value = float(judged.values[-1])
            if value is None:
                status = "no data"
            elif age_s is not None and age_s > stale_s:
                status = "stale"
            else:
                status = _judge(rule, value)
            unit = rule.unit  # drift rules: the change over the window named in the label
            room.channels.append(
                ChannelState(
                    rule.id,
                    rule.describe(),
                    rule.kind,
                    unit,
                    value,
                    rule.warning,
                    rule.limit,
                    status,
                    age_s,
                )
            )
        seen = set()
        for rule in config.rules_for_room(room_id):
            channel = (rule.sensor, rule.quantity, rule.band)
            if channel not in seen:
                seen.add(channel)
                label = f"{rule.sensor} {rule.quantity}" + (" (worst band)" if rule.band else "")
                room.charts.append((rule.id, label))
        for sensor in sorted(config.sensors.values(), key=lambda s: s.id):
            if sensor.room == room_id and "vibration" in sensor.quantities:
                found = vibration_class(db, sensor.id, now_us)
                if found is not None:
                    room.vibration.append(found)
        rooms.append(room)
    return rooms


def gate_states(db, config, now: datetime) -> list[tuple[object, object]]:
    """(instrument, GateDecision) for every configured instrument."""
    from instrument_env.gate import evaluate_gate

    return [
        (inst, evaluate_gate(db, inst.id, now, config=config))
        for inst in sorted(config.instruments.values(), key=lambda i: i.name)
    ]


@bp.get("/")
@login_required
def index():
    require_operator(g.user)
    from instrument_env.alarms import list_alarms

    # Read-only: charts read readings not yet rolled up from the raw table
    # (:func:`instrument_env.storage.rollup_series`); the monitor refreshes the rollups.
    db = get_db()
    config = env_config()
    now = datetime.now(UTC)
    span = request.args.get("span", "24h")
    if span not in SPANS:
        span = "24h"
    return render_template(
        "tech/index.html",
        rooms=room_states(db, config, now),
        alarms=list_alarms(db, "open"),
        gates=gate_states(db, config, now),
        span=span,
        now=now,
    )


@bp.get("/alarms/<int:alarm_id>")
@login_required
def alarm(alarm_id: int):
    """One alarm (open or closed) with every state change: when, who, why."""
    require_operator(g.user)
    from instrument_env.alarms import AlarmNotFound, alarm_history, get_alarm

    db = get_db()
    try:
        found = get_alarm(db, alarm_id)
    except AlarmNotFound:
        abort(404)
    return render_template("tech/alarm.html", alarm=found, history=alarm_history(db, alarm_id))


@bp.post("/alarms/<int:alarm_id>/ack")
@login_required
def acknowledge(alarm_id: int):
    require_operator(g.user)
    from instrument_env.alarms import (
        AlarmNotFound,
        AlarmStateConflict,
        InvalidAlarmRequest,
    )
    from instrument_env.alarms import acknowledge as ack

    db = get_db()
    try:
        ack(db, alarm_id, g.user.username, request.form.get("comment", ""))
    except AlarmNotFound:
        abort(404)
    except (AlarmStateConflict, InvalidAlarmRequest) as exc:
        db.rollback()
        flash(str(exc), "error")
        return redirect(url_for("tech.index"))
    db.commit()
    flash(f"Alarm {alarm_id} acknowledged.")
    return redirect(url_for("tech.index"))


def _rollups(db, rule, resolution_s: int, start: datetime, end: datetime) -> list[dict]:
    """Rollup buckets of the rule's channel (:func:`instrument_env.storage.rollup_series`);
    every band together (the worst) unless the rule names one band."""
    from instrument_env.limits import ANY_BAND
    from instrument_env.storage import rollup_series

    band = None if rule.band in (None, ANY_BAND) else rule.band
    return rollup_series(db, resolution_s, rule.sensor, rule.quantity, start, end, band=band)


def chart_svg(db, rule, span: str, now: datetime, siblings=(), zone=UTC) -> bytes:
    """Mean with min–max band of the rule's channel over ``span``, with the limit lines of
    every absolute (high/low) rule on that channel (``siblings``, default the rule).
    Time ticks are in ``zone`` (the facility's), named under the axis."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    length, resolution_s = SPANS[span]
    rows = _rollups(db, rule, resolution_s, now - length, now)
    fig = Figure(figsize=(4.6, 1.9), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.grid(True, color="#e5e7eb", linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=7)
    if not rows:
        ax.text(0.5, 0.5, "no readings", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        times = [datetime.fromtimestamp(r["start_us"] / 1e6, UTC) for r in rows]
        lows, highs, means = ([r[key] for r in rows] for key in ("min", "max", "mean"))
        ax.fill_between(times, lows, highs, color="#93c5fd", alpha=0.5, linewidth=0)
        ax.plot(times, means, color="#1f5f99", linewidth=1.0)
        for limit_rule in siblings or (rule,):
            if limit_rule.kind not in ("high", "low"):
                continue
            ax.axhline(limit_rule.limit, color="#b91c1c", linewidth=1, linestyle="--")
            if limit_rule.warning is not None:
                ax.axhline(limit_rule.warning, color="#d97706", linewidth=0.8, linestyle=":")
        ax.set_xlim(now - length, now)
        ax.xaxis.set_major_formatter(
            mdates.DateFormatter("%H:%M" if span == "24h" else "%a", tz=zone)
        )
        ax.set_xlabel(getattr(zone, "key", None) or str(zone), fontsize=6)
    ax.set_ylabel(rule.unit, fontsize=7)
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


@bp.get("/charts/<rule_id>.svg")
@login_required
def chart(rule_id: str):
    require_operator(g.user)
    span = request.args.get("span", "24h")
    if span not in SPANS:
        abort(404)
    rules = env_config().rules
    rule = next((r for r in rules if r.id == rule_id), None)
    if rule is None:
        abort(404)
    siblings = [
        r
        for r in rules
        if (r.sensor, r.quantity, r.band) == (rule.sensor, rule.quantity, rule.band)
    ]
    from portal.views.calendar import facility_tz

    data = chart_svg(get_db(), rule, span, datetime.now(UTC), siblings, facility_tz())
    response = Response(data, mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "private, max-age=60"
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return response
