"""instrument_env: rejected readings, kept with their reasons outside the series

Implausible values (outside a quantity's physical range, loggers' no-value codes),
conflicting duplicates (a second publisher), readings with impossible clocks and
malformed readings are refused by ingest; each is kept here with the reason, so nothing
sent is lost and the gate can count conflicts in its settling window.
"""

import sqlalchemy as sa
from alembic import op

revision = "env0003"
down_revision = "env0002"

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "env_rejected_readings",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sensor", sa.String(64), nullable=False),
        sa.Column("quantity", sa.String(64), nullable=False),
        sa.Column("ts_us", sa.BigInteger(), nullable=True),
        sa.Column("band", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_env_rejected_sensor_ts", "env_rejected_readings", ["sensor", "kind", "ts_us"]
    )


def downgrade() -> None:
    op.drop_index("ix_env_rejected_sensor_ts", table_name="env_rejected_readings")
    op.drop_table("env_rejected_readings")
