"""Log-in throttling that strangers cannot turn against users, and revocable sessions.

Delays, not lock-outs, counted atomically (40 concurrent guesses); addresses behind a
trusted proxy; one Argon2 verification for known and unknown users; log-out, password
change, reset and deactivation end cookies and tokens at once; revocable feed links.
"""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from portal.domain import accounts
from portal.domain.errors import TooManyAttempts, Unauthorized
from portal.domain.login_throttle import LoginPolicy
from portal.models import AuditEntry, LoginAttempt, LoginThrottle, User, utcnow
from tests.portal.conftest import csrf as _csrf
from tests.portal.conftest import login as _login


def _post_form(client, url: str, page: str, **data):
    data["csrf_token"] = _csrf(client, page)
    return client.post(url, data=data)


def _actions(world, action: str) -> int:
    with world.db() as db:
        return db.scalar(sa.select(sa.func.count(AuditEntry.id)).where(AuditEntry.action == action))


def test_a_stranger_delays_the_owner_briefly_but_never_locks_them_out(world):
    policy = LoginPolicy(free_failures=5, base_delay_s=1.0, max_delay_s=300.0)
    hasher = world.app.extensions["cryofac.hasher"]
    now = utcnow()
    with world.db() as db:
        for _ in range(5):
            with pytest.raises(Unauthorized):
                accounts.authenticate(db, hasher, "alice", "wrong", "10.0.0.9", policy, now)
            db.commit()
        # right after the fifth wrong guess the owner waits one second, not 15 minutes
        with pytest.raises(TooManyAttempts) as refused:
            accounts.authenticate(db, hasher, "alice", world.password, "10.0.0.1", policy, now)
        assert refused.value.retry_after_s == 1
        later = now + timedelta(seconds=1)
        user = accounts.authenticate(db, hasher, "alice", world.password, "10.0.0.1", policy, later)
        db.commit()
        assert user.username == "alice"
        # the success cleared the account's count: five more free tries
        row = db.get(LoginThrottle, "user:alice")
        assert row.failures == 0 and row.next_at is None
        # a persistent guesser is slowed exponentially, capped at max_delay_s
        delays = [policy.delay_s(n) for n in range(4, 16)]
        assert delays[:3] == [0.0, 1.0, 2.0] and delays[-1] == 300.0


def test_the_owners_browser_is_never_delayed_by_strangers(world, client):
    world.app.config["LOGIN_BASE_DELAY_S"] = 3600.0
    assert _login(client, "alice", world.password).status_code == 302  # remembered device
    assert _post_form(client, "/logout", "/bookings/mine").status_code == 302
    stranger = world.app.test_client()
    for _ in range(6):
        _login(stranger, "alice", "wrong-password")
    assert _login(stranger, "alice", world.password).status_code == 429
    assert _login(world.app.test_client(), "alice", world.password).status_code == 429
    assert _login(client, "alice", world.password).status_code == 302  # her own browser
    # the device cookie names the account: it helps no other one
    for _ in range(6):
        _login(stranger, "pi", "wrong-password")
    assert client.get_cookie("cryofac_device", path="/login") is not None
    assert _login(client, "pi", world.password).status_code == 429
    # wrong guesses from the remembered browser are slowed like any others
    assert _post_form(client, "/logout", "/bookings/mine").status_code == 302
    for _ in range(5):
        assert _login(client, "alice", "wrong-password").status_code == 401
    assert _login(client, "alice", world.password).status_code == 429


@pytest.mark.slow
def test_forty_concurrent_guesses_check_at_most_the_limit(world):
    world.app.config["LOGIN_BASE_DELAY_S"] = 3600.0  # the first delay outlasts the burst
    barrier = threading.Barrier(40)
    statuses: list[int] = []
    lock = threading.Lock()

    def guess(i: int) -> None:
        client = world.app.test_client()
        barrier.wait()
        response = client.post(
            "/api/v1/tokens", json={"username": "alice", "password": f"guess-{i}"}
        )
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(statuses)) == [401, 429]
    assert statuses.count(401) == 5  # exactly the free failures were checked
    with world.db() as db:
        checked = db.scalar(
            sa.select(sa.func.count(LoginAttempt.id)).where(LoginAttempt.username == "alice")
        )
        assert checked == 5
        assert db.get(LoginThrottle, "user:alice").failures == 5


def test_forwarded_for_is_ignored_unless_a_proxy_is_trusted(world, client):
    headers = {"X-Forwarded-For": "203.0.113.7"}
    assert _login(client, "nobody", "wrong-password", headers=headers).status_code == 401
    with world.db() as db:
        keys = set(db.scalars(sa.select(LoginThrottle.key)))
    assert "addr:127.0.0.1" in keys and "addr:203.0.113.7" not in keys

    from tests.portal.conftest import make_app

    trusting = make_app(world.app.config["DATABASE_URL"], TRUSTED_PROXY_HOPS=1)
    try:
        other = trusting.test_client()
        assert _login(other, "nobody", "wrong-password", headers=headers).status_code == 401
    finally:
        trusting.extensions["cryofac.engine"].dispose()
    with world.db() as db:
        keys = set(db.scalars(sa.select(LoginThrottle.key)))
    assert "addr:203.0.113.7" in keys


class CountingHasher(PasswordHasher):
    """Counts Argon2 runs (hash and verify) to compare the cost of log-in paths."""

    runs = 0

    def verify(self, hash, password):  # noqa: A002 (argon2's own argument name)
        CountingHasher.runs += 1
        return super().verify(hash, password)

    def hash(self, password, *, salt=None):
        CountingHasher.runs += 1
        return super().hash(password, salt=salt)


def test_known_unknown_and_disabled_users_cost_one_argon2_run(world):
    hasher = CountingHasher(time_cost=1, memory_cost=256, parallelism=1)
    accounts.dummy_hash(hasher)  # computed at start-up by create_app
    with world.db() as db:
        db.get(User, world.users["mallory"]).active = False
        db.commit()
        for username, password in (
            ("alice", "wrong-password"),
            ("no-such-user", "wrong-password"),
            ("mallory", world.password),  # disabled: refused like a wrong password
        ):
            CountingHasher.runs = 0
            with pytest.raises(Unauthorized):
                accounts.authenticate(db, hasher, username, password, "10.1.1.1")
            db.commit()
            assert CountingHasher.runs == 1, username


def test_an_old_cookie_is_dead_after_log_out(world, client):
    assert _login(client, "alice", world.password).status_code == 302
    stolen = client.get_cookie("session").value
    thief = world.app.test_client()
    thief.set_cookie("session", stolen)
    assert thief.get("/bookings/mine").status_code == 200
    assert _post_form(client, "/logout", "/bookings/mine").status_code == 302
    response = thief.get("/bookings/mine")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert _actions(world, "login") >= 1 and _actions(world, "logout") == 1


def test_password_change_revokes_other_sessions_and_tokens(world, client):
    token = world.token(client, "alice")
    assert _login(client, "alice", world.password).status_code == 302
    laptop = world.app.test_client()
    assert _login(laptop, "alice", world.password).status_code == 302

    mismatch = _post_form(
        client,
        "/account/password",
        "/account",
        current_password=world.password,
        new_password="a-new-password",
        confirm_password="another",
    )
    assert mismatch.status_code == 400 and "differ" in mismatch.get_data(as_text=True)
    wrong = _post_form(
        client,
        "/account/password",
        "/account",
        current_password="not-my-password",
        new_password="a-new-password",
        confirm_password="a-new-password",
    )
    assert wrong.status_code == 401
    assert client.get("/api/v1/instruments", headers=token).status_code == 200

    changed = _post_form(
        client,
        "/account/password",
        "/account",
        current_password=world.password,
        new_password="a-new-password",
        confirm_password="a-new-password",
    )
    assert changed.status_code == 302
    assert client.get("/account").status_code == 200  # this browser stays logged in
    assert laptop.get("/account").status_code == 302  # every other one is out
    assert client.get("/api/v1/instruments", headers=token).status_code == 401
    fresh = world.app.test_client()
    assert _login(fresh, "alice", world.password).status_code == 401
    assert _login(fresh, "alice", "a-new-password").status_code == 302
    assert _actions(world, "change_password") == 1


def test_admin_resets_and_deactivates_in_the_ui(world, client):
    alice = world.app.test_client()
    assert _login(alice, "alice", world.password).status_code == 302
    token = world.token(client, "alice")
    assert _login(client, "admin", world.password).status_code == 302
    page = client.get("/admin/users").get_data(as_text=True)
    assert "alice" in page and "Deactivate" in page

    user_id = world.users["alice"]
    off = _post_form(client, f"/admin/users/{user_id}/active", "/admin/users", active="0")
    assert off.status_code == 302
    assert alice.get("/bookings/mine").status_code == 302
    assert client.get("/api/v1/instruments", headers=token).status_code == 401
    assert _login(world.app.test_client(), "alice", world.password).status_code == 401

    on = _post_form(client, f"/admin/users/{user_id}/active", "/admin/users", active="1")
    assert on.status_code == 302
    assert alice.get("/bookings/mine").status_code == 302  # the old cookie stays dead
    reset = _post_form(client, f"/admin/users/{user_id}/reset-password", "/admin/users")
    assert reset.status_code == 200 and reset.headers["Cache-Control"] == "no-store"
    shown = reset.get_data(as_text=True)
    new_password = re.search(r"New password for alice: <code>([^<]+)</code>", shown).group(1)
    assert new_password not in client.get("/admin/users").get_data(as_text=True)  # once
    assert _login(world.app.test_client(), "alice", new_password).status_code == 302
    assert _login(world.app.test_client(), "alice", world.password).status_code == 401
    huge = _post_form(client, f"/admin/users/{2**40}/active", "/admin/users", active="0")
    assert huge.status_code == 404  # an id past PostgreSQL's integer: not found, not a 500
    # researchers cannot reach any of it
    assert _login(alice, "pi", world.password).status_code == 302
    assert alice.get("/admin/users").status_code == 403
    denied = _post_form(alice, f"/admin/users/{user_id}/active", "/bookings/mine", active="0")
    assert denied.status_code == 403
    assert _actions(world, "deactivate") == 1 and _actions(world, "reset_password") == 1


def test_cli_resets_deactivates_and_revokes(world, client, capsys, monkeypatch):
    from cryofac.cli import main

    monkeypatch.setenv("CRYOFAC_SECRET_KEY", "test")
    monkeypatch.setenv("CRYOFAC_PASSWORD_TIME_COST", "1")
    monkeypatch.setenv("CRYOFAC_PASSWORD_MEMORY_KIB", "256")
    token = world.token(client, "alice")
    url = world.app.config["DATABASE_URL"]

    def run(*args) -> tuple[int, str]:
        code = main(["portal", *args, "--database-url", url])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    code, out = run("revoke-sessions", "alice")
    assert code == 0 and "revoked" in out
    assert client.get("/api/v1/instruments", headers=token).status_code == 401
    monkeypatch.setenv("CRYOFAC_NEW_PASSWORD", "cli-password-1")
    assert run("set-password", "alice")[0] == 0
    assert _login(world.app.test_client(), "alice", "cli-password-1").status_code == 302
    with world.db() as db:
        entry = db.scalars(sa.select(AuditEntry).where(AuditEntry.action == "reset_password")).one()
        assert entry.actor_id is None  # the console, not alice
    token = world.token(client, "pi")
    code, out = run("deactivate", "pi", "--reason", "left the lab")
    assert code == 0 and "deactivated" in out
    assert client.get("/api/v1/instruments", headers=token).status_code == 401
    assert run("activate", "pi")[0] == 0
    assert _login(world.app.test_client(), "pi", world.password).status_code == 302
    code, out = run("deactivate", "nobody")
    assert code != 0 and "no user 'nobody'" in out
    monkeypatch.setenv("CRYOFAC_NEW_PASSWORD", "short")
    code, out = run("set-password", "alice")
    assert code != 0 and "at least 8" in out


def test_feed_links_are_revocable_and_built_from_the_external_url(world, client):
    world.app.config["EXTERNAL_URL"] = "https://cryoem.example.org"
    assert _login(client, "alice", world.password).status_code == 302
    page = client.get("/calendar/feeds").get_data(as_text=True)
    assert "localhost/ical" not in page  # the request's Host is not used
    old = re.search(r"https://cryoem\.example\.org(/ical/[^<\s\"]+\.ics)", page).group(1)
    calendar = world.app.test_client()
    assert calendar.get(old).status_code == 200
    assert _post_form(client, "/account/feeds/reset", "/calendar/feeds").status_code == 302
    assert calendar.get(old).status_code == 404
    page = client.get("/calendar/feeds").get_data(as_text=True)
    new = re.search(r"https://cryoem\.example\.org(/ical/[^<\s\"]+\.ics)", page).group(1)
    assert new != old and calendar.get(new).status_code == 200


def test_a_nul_byte_in_a_username_is_refused_at_the_edge(world, client):
    """The request edge refuses NUL characters in any JSON body or form (400 with a
    message, issue 20), before the log-in code sees them: no 500, no session."""
    response = client.post("/api/v1/tokens", json={"username": "ali\u0000ce", "password": "x"})
    assert response.status_code == 400
    assert "NUL" in response.get_json()["error"]["message"]
    assert _login(client, "ali\x00ce", world.password).status_code == 400
    assert client.get("/account").status_code == 302  # not logged in


def test_tokens_are_audited(world, client):
    headers = world.token(client, "alice")
    assert client.delete("/api/v1/tokens", headers=headers).status_code == 204
    assert client.get("/api/v1/instruments", headers=headers).status_code == 401
    assert _actions(world, "create_token") == 1 and _actions(world, "revoke_token") == 1
    assert _actions(world, "login") == 1


def test_serve_settings_secure_cookies_and_external_url(world):
    import click

    from portal.cli import serve_settings
    from tests.portal.conftest import make_app

    assert serve_settings("0.0.0.0", 8000, None, None, 0) == {
        "EXTERNAL_URL": "http://0.0.0.0:8000",
        "SESSION_COOKIE_SECURE": False,
        "TRUSTED_PROXY_HOPS": 0,
    }
    https = serve_settings("127.0.0.1", 8000, "https://cryoem.example.org/", None, 1)
    assert https["SESSION_COOKIE_SECURE"] is True and https["TRUSTED_PROXY_HOPS"] == 1
    assert https["EXTERNAL_URL"] == "https://cryoem.example.org"
    with pytest.raises(click.BadParameter):
        serve_settings("127.0.0.1", 8000, "javascript:alert(1)", None, 0)

    def cookie_after_login(**config) -> str:
        app = make_app(world.app.config["DATABASE_URL"], **config)
        try:
            response = _login(app.test_client(), "alice", world.password)
            assert response.status_code == 302
            return response.headers["Set-Cookie"]
        finally:
            app.extensions["cryofac.engine"].dispose()

    assert "Secure" in cookie_after_login(SESSION_COOKIE_SECURE=True)
    assert "Secure" not in cookie_after_login(SESSION_COOKIE_SECURE=False)
