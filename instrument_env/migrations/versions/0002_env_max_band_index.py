"""instrument_env: partial covering index of the derived maximum vibration band

A rule over every band of a vibration sensor reads the ``max`` band derived at ingest
(one row per time). The primary key orders rows by (sensor, quantity, ts_us, band), so
that read walked every band's rows in the time range (16 per second for 15 bands + max).
This index holds only the ``max`` rows, with their value, so the read is one row per
time. It costs one index entry per ingested time of a banded sensor.
"""

import sqlalchemy as sa
from alembic import op

revision = "env0002"
down_revision = "env0001"


def upgrade() -> None:
    op.create_index(
        "ix_env_readings_max_band",
        "env_readings",
        ["sensor", "quantity", "ts_us", "value"],
        sqlite_where=sa.text("band = 'max'"),
        postgresql_where=sa.text("band = 'max'"),
    )


def downgrade() -> None:
    op.drop_index("ix_env_readings_max_band", table_name="env_readings")
