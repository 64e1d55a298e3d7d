"""Log-in cost for known, unknown and disabled accounts, and a concurrent guessing burst.

Usage: python benchmarks/portal_login_cost.py [--rounds 15] [--database-url URL]

Production Argon2 parameters (time cost 3, 64 MiB) on a throw-away SQLite database
(or ``--database-url``). Each round tries the four kinds in turn, each from its own
address and account so that no delay applies, and prints the median and the
interquartile range in ms. Then 40 threads guess one account's password at once and
the number of guesses actually checked against the hash is printed (the limit is 5).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    from portal import create_app
    from portal import db as portal_db
    from portal.domain import accounts
    from portal.domain.errors import PortalError
    from portal.models import LoginAttempt

    tmp = Path(tempfile.mkdtemp(prefix="cryofac-login-"))
    url = args.database_url or f"sqlite:///{tmp / 'portal.sqlite3'}"
    portal_db.upgrade(url)
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "bench", "LOGIN_BASE_DELAY_S": 3600})
    hasher = app.extensions["cryofac.hasher"]
    maker = app.extensions["cryofac.sessionmaker"]
    password = "correct horse battery"
    with maker() as db:
        for i in range(args.rounds):
            accounts.create_user(db, hasher, f"known{i}", password, "researcher")
            accounts.create_user(db, hasher, f"right{i}", password, "researcher")
            accounts.create_user(db, hasher, f"disabled{i}", password, "researcher").active = False
        accounts.create_user(db, hasher, "target", password, "researcher")
        db.commit()

    kinds = {
        "known user, wrong password": lambda i: (f"known{i}", "wrong-password"),
        "unknown user": lambda i: (f"nobody{i}", "wrong-password"),
        "disabled user, right password": lambda i: (f"disabled{i}", password),
        "known user, right password": lambda i: (f"right{i}", password),
    }
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for i in range(args.rounds):
        for k, (kind, make) in enumerate(kinds.items()):
            username, guess = make(i)
            with maker() as db:
                began = time.perf_counter()
                with contextlib.suppress(PortalError):
                    accounts.authenticate(db, hasher, username, guess, f"10.{k}.{i}.1")
                db.commit()
                times[kind].append((time.perf_counter() - began) * 1000)
    print(f"log-in cost, {args.rounds} rounds, Argon2 t=3 m=64 MiB, {url.split(':')[0]}")
    for kind, values in times.items():
        q = statistics.quantiles(values, n=4)
        print(f"  {kind:32s} median {statistics.median(values):7.1f} ms  IQR {q[0]:.1f}-{q[2]:.1f}")

    statuses: list[str] = []
    barrier = threading.Barrier(40)

    def guess(n: int) -> None:
        with app.app_context(), maker() as db:
            barrier.wait()
            try:
                accounts.authenticate(db, hasher, "target", f"guess-{n}", "192.0.2.1")
                statuses.append("ok")
            except PortalError as exc:
                statuses.append(exc.code)
            db.commit()

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with maker() as db:
        import sqlalchemy as sa

        checked = db.scalar(
            sa.select(sa.func.count(LoginAttempt.id)).where(LoginAttempt.username == "target")
        )
    print(
        f"40 concurrent guesses: {checked} checked against the hash (limit 5), "
        f"{statuses.count('too_many_attempts')} refused with 429"
    )
    app.extensions["cryofac.engine"].dispose()


if __name__ == "__main__":
    main()
