"""Helpers of the instrument_env tests: a TCP proxy that forwards, black-holes or
refuses a database, a portal with instrument_env's tables and users, and a portal
session ready to start acquisition."""

from __future__ import annotations

import contextlib
import socket
import threading

import sqlalchemy as sa

from portal.models import AcqSession
from tests.portal.conftest import PASSWORD, make_app, make_slot


class FaultProxy:
    """A TCP proxy to ``target``: ``forward`` (pass bytes both ways), ``blackhole``
    (accept, swallow, never answer; existing connections too), or closed (refused).
    ``hole_after``: each new connection forwards until its client has sent that many
    bytes (the log-in), then black-holes (a database that goes silent mid-work)."""

    def __init__(self, target: tuple[str, int], hole_after: int | None = None):
        self.target = target
        self.hole_after = hole_after
        self.mode = "forward"
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            upstream = None
            if self.mode == "forward":
                upstream = socket.create_connection(self.target)
                self.sockets.append(upstream)
            state = {"sent": 0}
            for source, sink, budget in (
                (client, upstream, self.hole_after),
                (upstream, client, None),
            ):
                if source is not None:
                    threading.Thread(
                        target=self._pump, args=(source, sink, budget, state), daemon=True
                    ).start()

    def _pump(self, source, sink, budget: int | None, state: dict) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            if budget is not None:
                state["sent"] += len(data)
                if state["sent"] > budget:
                    state["holed"] = True
            if sink is not None and self.mode == "forward" and not state.get("holed"):
                try:
                    sink.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        # shutdown unblocks the accepting thread (a bare close would leave it listening)
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for sock in self.sockets:  # shutdown: a FIN now, even under a blocked recv
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


def ready_session(world, client, instrument_id: str = "glacios1") -> int:
    """A booking of ``instrument_id`` by alice whose session staff moved to ``ready``;
    returns the session's id."""
    start, end = make_slot(48, 8)
    booking = client.post(
        "/api/v1/bookings",
        json={
            "instrument_id": instrument_id,
            "project_id": world.project_id,
            "start": start,
            "end": end,
        },
        headers=world.token(client, "alice"),
    ).get_json()
    with world.db() as db:
        session_id = db.scalar(
            sa.select(AcqSession.id).where(AcqSession.booking_id == booking["id"])
        )
    ready = client.post(
        f"/api/v1/sessions/{session_id}/transition",
        json={"state": "ready"},
        headers=world.token(client, "staff"),
    )
    assert ready.status_code == 200, ready.get_json()
    return session_id


def env_portal(database_url: str, users=(("tech", "technician"),), **config):
    """A migrated portal (its tables and instrument_env's) with ``users`` (name, role);
    returns (app, test client, ``headers(user)`` giving a bearer-token header)."""
    from instrument_env.db import upgrade as env_upgrade
    from portal import db as portal_db
    from portal.domain import accounts

    portal_db.upgrade(database_url)
    env_upgrade(database_url)
    app = make_app(database_url, **config)
    with app.extensions["cryofac.sessionmaker"]() as db:
        hasher = app.extensions["cryofac.hasher"]
        for name, role in users:
            accounts.create_user(db, hasher, name, PASSWORD, role)
        db.commit()
    client = app.test_client()

    def headers(user: str) -> dict[str, str]:
        r = client.post("/api/v1/tokens", json={"username": user, "password": PASSWORD})
        assert r.status_code == 201, r.get_json()
        return {"Authorization": f"Bearer {r.get_json()['token']}"}

    return app, client, headers
