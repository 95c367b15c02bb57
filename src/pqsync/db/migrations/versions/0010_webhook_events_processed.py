"""webhook events are the queue of record: when each was processed

Revision ID: 0010
Revises: 0004
Create Date: 2026-12-07

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_webhook_events_pending", ["processed_at", "outcome"], unique=False
        )
    # Events received before this revision were handled (or dropped) the old way.
    op.execute("UPDATE webhook_events SET processed_at = received_at WHERE processed_at IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_events_pending")
        batch_op.drop_column("processed_at")
