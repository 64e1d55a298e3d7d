"""A database that refuses connections is a 503 with a JSON error (pages: a 503 page),
never a bare 500 (issue 17's fault probe: /alarms, /env/readings and /tokens said 500)."""

from __future__ import annotations

import socket

import pytest

from portal import create_app


def _closed_port() -> int:
    with socket.socket() as sock:  # bound and closed again: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////nonexistent-folder-of-cryofac/portal.sqlite3",
        f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/cryofac",
    ],
    ids=["sqlite-unopenable", "postgresql-refused"],
)
def test_a_refusing_database_is_a_503_not_a_500(url, tmp_path):
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "x", "TESTING": True})
    client = app.test_client()
    response = client.post("/api/v1/tokens", json={"username": "alice", "password": "pw"})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "unavailable"
    assert response.headers["Retry-After"]
    headers = {"Authorization": "Bearer " + "x" * 40}
    for path in ("/api/v1/alarms", "/api/v1/instruments"):
        assert client.get(path, headers=headers).status_code == 503, path
    with client.session_transaction() as cookie:  # a logged-in browser: the page reads the user
        cookie["user_id"], cookie["epoch"] = 1, 0
    page = client.get("/")
    assert page.status_code == 503
    assert "not answering" in page.get_data(as_text=True)
