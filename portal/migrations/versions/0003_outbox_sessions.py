"""Notification outbox table; live sessions that cannot overlap.

* ``outbox_messages``: notifications written in the transaction of the change that
  causes them, delivered by ``cryofac portal worker``.
* ``instruments.horizon_days``: how far ahead a booking may end (default 365).
* ``sessions.start_at``/``end_at``: the booking's slot, copied (existing rows filled
  from their booking). Two live sessions (scheduled, ready, acquiring, processing) on
  one instrument cannot overlap: an exclusion constraint on PostgreSQL, triggers that
  abort the statement on SQLite.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

TS = sa.DateTime(timezone=True)
LIVE = "('scheduled', 'ready', 'acquiring', 'processing')"
_SQLITE_OVERLAP = f"""
CREATE TRIGGER {{name}} BEFORE {{event}} ON sessions
WHEN NEW.state IN {LIVE}
BEGIN
    SELECT RAISE(ABORT, 'ex_sessions_no_overlap: two live sessions overlap on one instrument')
    WHERE EXISTS (
        SELECT 1 FROM sessions AS other
        WHERE other.instrument_id = NEW.instrument_id
          AND other.id IS NOT NEW.id
          AND other.state IN {LIVE}
          AND other.start_at < NEW.end_at
          AND other.end_at > NEW.start_at
    );
END
"""
_TRIGGERS = {
    "tr_sessions_no_overlap_insert": "INSERT",
    "tr_sessions_no_overlap_update": "UPDATE OF state, instrument_id, start_at, end_at",
}


def upgrade() -> None:
    op.create_table(
        "outbox_messages",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("recipients", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("dedupe_key", sa.String(200), nullable=True, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_outbox_due", "outbox_messages", ["status", "next_attempt_at"])
    op.create_index("ix_outbox_sent_at", "outbox_messages", ["sent_at"])
    with op.batch_alter_table("instruments") as batch:
        batch.add_column(sa.Column("horizon_days", sa.Float, nullable=False, server_default="365"))
    with op.batch_alter_table("instruments") as batch:
        batch.alter_column("horizon_days", existing_type=sa.Float, server_default=None)

    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("start_at", TS, nullable=True))
        batch.add_column(sa.Column("end_at", TS, nullable=True))
    op.execute(
        "UPDATE sessions SET "
        "start_at = (SELECT start_at FROM bookings WHERE bookings.id = sessions.booking_id), "
        "end_at = (SELECT end_at FROM bookings WHERE bookings.id = sessions.booking_id)"
    )
    with op.batch_alter_table("sessions") as batch:
        batch.alter_column("start_at", existing_type=TS, nullable=False)
        batch.alter_column("end_at", existing_type=TS, nullable=False)
        batch.create_check_constraint("ck_sessions_positive_duration", "end_at > start_at")
    op.create_index("ix_sessions_instrument_start", "sessions", ["instrument_id", "start_at"])
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(
            "ALTER TABLE sessions ADD CONSTRAINT ex_sessions_no_overlap EXCLUDE USING gist "
            "(instrument_id WITH =, tstzrange(start_at, end_at, '[)') WITH &&) "
            f"WHERE (state IN {LIVE})"
        )
    elif dialect == "sqlite":
        for name, event in _TRIGGERS.items():
            op.execute(_SQLITE_OVERLAP.format(name=name, event=event))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("ALTER TABLE sessions DROP CONSTRAINT ex_sessions_no_overlap")
    elif dialect == "sqlite":
        for name in _TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_index("ix_sessions_instrument_start", "sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint("ck_sessions_positive_duration", type_="check")
        batch.drop_column("end_at")
        batch.drop_column("start_at")
    with op.batch_alter_table("instruments") as batch:
        batch.drop_column("horizon_days")
    op.drop_index("ix_outbox_sent_at", "outbox_messages")
    op.drop_index("ix_outbox_due", "outbox_messages")
    op.drop_table("outbox_messages")
