"""The test databases themselves: both backends reachable and faithful for what cryofac stores."""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa


def test_timestamps_and_json_round_trip(database_url):
    engine = sa.create_engine(database_url)
    meta = sa.MetaData()
    table = sa.Table(
        "probe",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("extra", sa.JSON),
        sa.UniqueConstraint("ts", name="uq_probe_ts"),
    )
    meta.create_all(engine)
    t0 = datetime(2026, 11, 25, 8, 30, 0, 123456, tzinfo=UTC)
    rows = [
        {"ts": t0 + timedelta(seconds=i), "value": 20.0 + i / 100, "extra": {"i": i}}
        for i in range(100)
    ]
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    with engine.connect() as conn:
        got = conn.execute(sa.select(table).order_by(table.c.ts)).all()
    assert len(got) == 100
    first = got[0].ts if got[0].ts.tzinfo else got[0].ts.replace(tzinfo=UTC)
    assert first == t0
    assert got[-1].extra == {"i": 99}
    assert abs(sum(r.value for r in got) - sum(r["value"] for r in rows)) < 1e-9
    # The unique constraint holds on both backends (idempotent ingest will rely on it).
    try:
        with engine.begin() as conn:
            conn.execute(table.insert(), [rows[0]])
        raised = False
    except sa.exc.IntegrityError:
        raised = True
    assert raised
    engine.dispose()
