"""Revocable sessions and throttled log-ins: users.auth_epoch and users.feed_generation,
and login_throttle (one row per account name or client address, counted atomically).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("auth_epoch", sa.Integer, nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(
            sa.Column("feed_generation", sa.Integer, nullable=False, server_default=sa.text("0"))
        )
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(160), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("next_at", TS, nullable=True),
        sa.Column("last_failure_at", TS, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("login_throttle")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("feed_generation")
        batch.drop_column("auth_epoch")
