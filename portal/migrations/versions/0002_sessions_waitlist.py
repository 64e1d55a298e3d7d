"""Acquisition sessions (lifecycle, operator, raw and run folders) and the booking waitlist."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "booking_id", sa.Integer, sa.ForeignKey("bookings.id"), nullable=False, unique=True
        ),
        sa.Column("instrument_id", sa.String(64), sa.ForeignKey("instruments.id"), nullable=False),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("operator_id", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
        sa.Column("raw_dir", sa.String(1000), nullable=True),
        sa.Column("run_dir", sa.String(1000), nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "waitlist_entries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("instrument_id", sa.String(64), sa.ForeignKey("instruments.id"), nullable=False),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("start_at", TS, nullable=False),
        sa.Column("end_at", TS, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("offered_at", TS, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("waitlist_entries")
    op.drop_table("sessions")
