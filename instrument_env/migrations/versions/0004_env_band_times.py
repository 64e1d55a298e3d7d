"""instrument_env: the band labels stored at each reading time of a banded channel

The gate judges coverage band by band. Proving every band present at every reading time
of a 1 h settling window counted one index entry per band and time (72,000 for 20 bands
at 1 Hz). ``env_band_times`` keeps, per (sensor, quantity, time), the time's stored
band labels joined in code-point order; ingest rewrites the rows of each batch's span
from the stored band rows (as it does the derived ``max`` row), so the gate reads one
row per time. Existing band rows are backfilled here.
"""

import sqlalchemy as sa
from alembic import op

from instrument_env.ingest import band_times_sql
from instrument_env.models import BAND_SEPARATOR

revision = "env0004"
down_revision = "env0003"


def upgrade() -> None:
    key = {"sensor": sa.String(64), "quantity": sa.String(64), "ts_us": sa.BigInteger()}
    columns = [sa.Column(name, kind, primary_key=True) for name, kind in key.items()]
    columns.append(sa.Column("bands", sa.Text(), nullable=False))
    op.create_table("env_band_times", *columns, sqlite_with_rowid=False)
    bind = op.get_bind()
    bind.execute(sa.text(band_times_sql(bind.dialect.name, span=False)), {"sep": BAND_SEPARATOR})


def downgrade() -> None:
    op.drop_table("env_band_times")
