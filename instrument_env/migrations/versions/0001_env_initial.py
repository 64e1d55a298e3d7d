"""instrument_env: readings, rollups, alarms, notifications, gate overrides"""

import sqlalchemy as sa
from alembic import op

revision = "env0001"
down_revision = None
branch_labels = ("instrument_env",)
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "env_readings",
        sa.Column("sensor", sa.String(64), nullable=False),
        sa.Column("quantity", sa.String(64), nullable=False),
        sa.Column("ts_us", sa.BigInteger(), nullable=False),
        sa.Column("band", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        # (sensor, quantity, ts) first: the key doubles as the time-range index.
        sa.PrimaryKeyConstraint("sensor", "quantity", "ts_us", "band", name="pk_env_readings"),
        sqlite_with_rowid=False,  # SQLite: rows clustered on the key
    )
    op.create_table(
        "env_rollups",
        sa.Column("resolution_s", sa.Integer(), nullable=False),
        sa.Column("sensor", sa.String(64), nullable=False),
        sa.Column("quantity", sa.String(64), nullable=False),
        sa.Column("bucket_us", sa.BigInteger(), nullable=False),
        sa.Column("band", sa.String(16), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.Column("mean", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "resolution_s", "sensor", "quantity", "bucket_us", "band", name="pk_env_rollups"
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "env_rollup_dirty",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("sensor", sa.String(64), nullable=False),
        sa.Column("quantity", sa.String(64), nullable=False),
        sa.Column("start_us", sa.BigInteger(), nullable=False),
        sa.Column("end_us", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "env_alarms",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("room", sa.String(64), nullable=False),
        sa.Column("sensor", sa.String(64), nullable=False),
        sa.Column("quantity", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("threshold", sa.Float()),
        sa.Column("worst_value", sa.Float()),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("fired_at", sa.DateTime()),
        sa.Column("acknowledged_at", sa.DateTime()),
        sa.Column("acknowledged_by", sa.String(128)),
        sa.Column("ack_comment", sa.Text()),
        sa.Column("escalated_at", sa.DateTime()),
        sa.Column("resolved_at", sa.DateTime()),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_env_alarms_rule_state", "env_alarms", ["rule_id", "state"])
    op.create_index("ix_env_alarms_room", "env_alarms", ["room"])
    op.create_index("ix_env_alarms_state", "env_alarms", ["state"])
    op.create_table(
        "env_alarm_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "alarm_id",
            BigId,
            sa.ForeignKey("env_alarms.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("from_state", sa.String(16)),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
    )
    op.create_index("ix_env_alarm_events_alarm_id", "env_alarm_events", ["alarm_id"])
    op.create_table(
        "env_notifications",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("alarm_id", BigId, sa.ForeignKey("env_alarms.id", ondelete="SET NULL")),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(256), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime()),
    )
    op.create_index("ix_env_notifications_alarm_id", "env_notifications", ["alarm_id"])
    op.create_table(
        "env_gate_overrides",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("instrument_id", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("refused_reasons", sa.Text(), nullable=False),
    )
    op.create_index("ix_env_gate_overrides_instrument_id", "env_gate_overrides", ["instrument_id"])


def downgrade() -> None:
    for table in (
        "env_gate_overrides",
        "env_notifications",
        "env_alarm_events",
        "env_alarms",
        "env_rollup_dirty",
        "env_rollups",
        "env_readings",
    ):
        op.drop_table(table)
