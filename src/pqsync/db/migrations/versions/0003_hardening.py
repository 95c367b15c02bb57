"""hardening: login attempts note the known device; appointments keep minimum metadata

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-05

"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# pqsync.intakeq.models.METADATA_FIELDS as of this revision (a migration never changes).
KEPT = frozenset({"LocationName", "PractitionerName", "PractitionerEmail"})
BATCH = 1000

appointments = sa.table(
    "appointments", sa.column("id", sa.Uuid()), sa.column("metadata", sa.JSON())
)


def _minimum(metadata: Any) -> dict[str, Any]:
    if not isinstance(metadata, dict):
        return {}
    return {k: v for k, v in metadata.items() if k in KEPT}


def _strip_metadata() -> None:
    """Remove what IntakeQ sent beyond the allow-list (phone, birth date, telehealth links,
    fields nobody reads) from every stored appointment, a batch at a time."""
    connection = op.get_bind()
    after = None
    while True:
        query = sa.select(appointments.c.id, appointments.c.metadata).order_by(appointments.c.id)
        if after is not None:
            query = query.where(appointments.c.id > after)
        rows = connection.execute(query.limit(BATCH)).all()
        if not rows:
            return
        for row_id, metadata in rows:
            kept = _minimum(metadata)
            if kept != metadata:
                connection.execute(
                    sa.update(appointments).where(appointments.c.id == row_id).values(metadata=kept)
                )
        after = rows[-1][0]


def upgrade() -> None:
    with op.batch_alter_table("login_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("device_hash", sa.String(length=64), nullable=True))
    _strip_metadata()


def downgrade() -> None:
    # What was removed from appointments' metadata is gone; the next sync does not bring it back.
    with op.batch_alter_table("login_attempts", schema=None) as batch_op:
        batch_op.drop_column("device_hash")
