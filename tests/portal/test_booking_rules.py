"""Every booking rule is enforced through the JSON API (422 naming the rule, 409, 403)."""

from __future__ import annotations

import sqlalchemy as sa

from portal.domain import projects
from portal.models import Project, User


def _post(client, headers, instrument, project_id, start, end, **extra):
    body = {"instrument_id": instrument, "project_id": project_id, "start": start, "end": end}
    body.update(extra)
    return client.post("/api/v1/bookings", json=body, headers=headers)


def _assert_rule(response, rule: str) -> None:
    body = response.get_json()
    assert response.status_code == 422, (rule, body)
    assert body["error"]["code"] == "booking_rule"
    assert body["error"]["message"].startswith(f"{rule}:"), body


def test_each_rule_is_enforced_through_the_api(world, client, slot):
    alice = world.token(client, "alice")
    pid = world.project_id

    _assert_rule(_post(client, alice, "glacios1", pid, *reversed(slot(48, 4))), "time_order")
    _assert_rule(_post(client, alice, "glacios1", pid, *slot(48, 1)), "min_duration")
    _assert_rule(_post(client, alice, "glacios1", pid, *slot(48, 25)), "max_duration")
    _assert_rule(_post(client, alice, "glacios1", pid, *slot(6, 4)), "lead_time")
    _assert_rule(_post(client, alice, "krios1", pid, *slot(24, 24)), "lead_time")
    # untrained is a member of the project but holds no training record
    untrained = world.token(client, "untrained")
    _assert_rule(_post(client, untrained, "glacios1", pid, *slot(48, 4)), "training")

    with world.db() as db:
        staff = db.get(User, world.users["staff"])
        pi = db.get(User, world.users["pi"])
        draft = projects.create_project(db, pi, "P-DRAFT", "Not yet approved")
        projects.add_member(db, pi, draft, db.get(User, world.users["alice"]))
        projects.change_state(db, pi, draft, "submitted")
        projects.change_state(db, staff, draft, "approved")
        projects.set_allocation(db, staff, draft, "microscope", 100)
        projects.set_allocation(db, staff, db.get(Project, pid), "vitrification_robot", 3)
        db.commit()
        draft_id = draft.id
    _assert_rule(_post(client, alice, "glacios1", draft_id, *slot(48, 4)), "project_state")

    # allocation: 3 h of vitrification robot; 2 h pass, the next 2 h do not
    ok = _post(client, alice, "vitrobot1", pid, *slot(30, 2))
    assert ok.status_code == 201, ok.get_json()
    _assert_rule(_post(client, alice, "vitrobot1", pid, *slot(40, 2)), "allocation")

    # sample preparation belongs before its microscope session, in the same project
    microscope = _post(client, alice, "glacios1", pid, *slot(72, 8))
    assert microscope.status_code == 201
    mid = microscope.get_json()["id"]
    _assert_rule(
        _post(client, alice, "glowdischarge1", pid, *slot(75, 1), for_booking_id=mid),
        "sample_prep",
    )
    _assert_rule(
        _post(client, alice, "glacios1", pid, *slot(100, 4), for_booking_id=mid), "sample_prep"
    )
    mallory = world.token(client, "mallory")
    _assert_rule(
        _post(
            client,
            mallory,
            "glowdischarge1",
            world.other_project_id,
            *slot(70, 1),
            for_booking_id=mid,
        ),
        "sample_prep",
    )
    prep = _post(client, alice, "glowdischarge1", pid, *slot(70, 1), for_booking_id=mid)
    assert prep.status_code == 201, prep.get_json()
    assert prep.get_json()["for_booking_id"] == mid


def test_overlap_and_maintenance_are_409(world, client, slot):
    from datetime import datetime

    from portal.domain.bookings import add_maintenance

    alice = world.token(client, "alice")
    mallory = world.token(client, "mallory")
    first = _post(client, alice, "glacios1", world.project_id, *slot(48, 6))
    assert first.status_code == 201
    # a partial overlap from another project is refused; touching end-to-start is fine
    clash = _post(client, mallory, "glacios1", world.other_project_id, *slot(52, 4))
    assert clash.status_code == 409
    assert clash.get_json()["error"]["code"] == "booking_conflict"
    touching = _post(client, mallory, "glacios1", world.other_project_id, *slot(54, 4))
    assert touching.status_code == 201, touching.get_json()
    # the same slot on another instrument is free
    other = _post(client, mallory, "vitrobot1", world.other_project_id, *slot(48, 2))
    assert other.status_code == 201

    start, end = slot(100, 10)
    with world.db() as db:
        add_maintenance(
            db,
            db.get(User, world.users["tech"]),
            "glacios1",
            datetime.fromisoformat(start),
            datetime.fromisoformat(end),
            "cryo-cycle",
        )
        db.commit()
    blocked = _post(client, alice, "glacios1", world.project_id, *slot(104, 4))
    assert blocked.status_code == 409
    assert "maintenance" in blocked.get_json()["error"]["message"]


def test_cancellation_deadline_and_permissions(world, client, slot):
    alice = world.token(client, "alice")
    pid = world.project_id
    # glacios1: cancellation deadline 24 h, lead time 12 h
    late = _post(client, alice, "glacios1", pid, *slot(18, 4)).get_json()
    early = _post(client, alice, "glacios1", pid, *slot(72, 4)).get_json()
    refused = client.delete(f"/api/v1/bookings/{late['id']}", headers=alice)
    assert refused.status_code == 409
    assert refused.get_json()["error"]["code"] == "cancellation_deadline"
    # another project's member cannot see it; a member who did not book cannot cancel it
    mallory = world.token(client, "mallory")
    assert client.delete(f"/api/v1/bookings/{early['id']}", headers=mallory).status_code == 404
    untrained = world.token(client, "untrained")
    assert client.delete(f"/api/v1/bookings/{early['id']}", headers=untrained).status_code == 403
    assert client.delete(f"/api/v1/bookings/{early['id']}", headers=alice).status_code == 204
    assert client.delete(f"/api/v1/bookings/{early['id']}", headers=alice).status_code == 409
    # staff may still cancel past the deadline
    staff = world.token(client, "staff")
    assert client.delete(f"/api/v1/bookings/{late['id']}", headers=staff).status_code == 204


def test_non_member_cannot_book_for_a_project(world, client, slot):
    mallory = world.token(client, "mallory")
    response = _post(client, mallory, "glacios1", world.project_id, *slot(48, 4))
    assert response.status_code == 403
    missing = _post(client, mallory, "nope", world.other_project_id, *slot(48, 4))
    assert missing.status_code == 404


def test_approval_required_then_session_scheduled(world, client, slot):
    alice = world.token(client, "alice")
    staff = world.token(client, "staff")
    booking = _post(client, alice, "krios1", world.project_id, *slot(96, 48)).get_json()
    assert booking["status"] == "pending"
    assert (
        client.post(
            f"/api/v1/bookings/{booking['id']}/decision", json={"approve": True}, headers=alice
        ).status_code
        == 403
    )
    decided = client.post(
        f"/api/v1/bookings/{booking['id']}/decision", json={"approve": True}, headers=staff
    )
    assert decided.status_code == 200 and decided.get_json()["status"] == "confirmed"
    from portal.models import AcqSession

    with world.db() as db:
        session = db.scalar(sa.select(AcqSession).where(AcqSession.booking_id == booking["id"]))
        assert session is not None and session.state == "scheduled"


def test_waitlist_is_offered_a_freed_slot(world, client, slot):
    from portal.models import WaitlistEntry

    alice = world.token(client, "alice")
    mallory = world.token(client, "mallory")
    held = _post(client, alice, "glacios1", world.project_id, *slot(60, 8)).get_json()
    start, end = slot(62, 4)
    assert _post(client, mallory, "glacios1", world.other_project_id, start, end).status_code == 409
    wait = client.post(
        "/api/v1/waitlist",
        json={
            "instrument_id": "glacios1",
            "project_id": world.other_project_id,
            "start": start,
            "end": end,
        },
        headers=mallory,
    )
    assert wait.status_code == 201
    assert client.delete(f"/api/v1/bookings/{held['id']}", headers=alice).status_code == 204
    with world.db() as db:
        assert db.get(WaitlistEntry, wait.get_json()["id"]).state == "offered"
    taken = _post(client, mallory, "glacios1", world.other_project_id, start, end)
    assert taken.status_code == 201
    with world.db() as db:
        assert db.get(WaitlistEntry, wait.get_json()["id"]).state == "accepted"


def test_waitlist_refuses_a_retired_instrument_and_an_inactive_project(world, client, slot):
    """A waitlist entry is refused where a booking would be: an instrument taken out of
    service is not found, and a project that is not active cannot wait for a slot."""
    from portal.models import Instrument, Project, WaitlistEntry

    mallory = world.token(client, "mallory")
    start, end = slot(62, 4)

    def wait(instrument_id: str):
        return client.post(
            "/api/v1/waitlist",
            json={
                "instrument_id": instrument_id,
                "project_id": world.other_project_id,
                "start": start,
                "end": end,
            },
            headers=mallory,
        )

    with world.db() as db:
        db.get(Instrument, "glacios1").active = False
        db.commit()
    assert wait("glacios1").status_code == 404
    with world.db() as db:
        db.get(Instrument, "glacios1").active = True
        db.get(Project, world.other_project_id).state = "closed"
        db.commit()
    refused = wait("glacios1")
    assert refused.status_code == 422, refused.get_data(as_text=True)
    assert "not active" in refused.get_data(as_text=True)
    with world.db() as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(WaitlistEntry)) == 0
    with world.db() as db:
        db.get(Project, world.other_project_id).state = "active"
        db.commit()
    assert wait("glacios1").status_code == 201
