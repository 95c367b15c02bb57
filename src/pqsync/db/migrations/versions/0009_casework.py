"""casework: handled attention items, calendar feed addresses, case managers' preferences,
invitations

Revision ID: 0009
Revises: 0011
Create Date: 2026-12-07

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.create_index("ix_appointments_start_time", ["start_time"], unique=False)
    op.create_table(
        "attention_handled",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("item_key", sa.String(length=120), nullable=False),
        sa.Column("handled_by_user_id", sa.Uuid(), nullable=True),
        sa.Column("handled_by_name", sa.String(length=200), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_attention_handled_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_attention_handled_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["handled_by_user_id"],
            ["partner_users.id"],
            name=op.f("fk_attention_handled_handled_by_user_id_partner_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attention_handled")),
        sa.UniqueConstraint(
            "organization_id",
            "patient_id",
            "item_key",
            name=op.f("uq_attention_handled_organization_id"),
        ),
    )
    op.create_table(
        "calendar_feeds",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["partner_users.id"],
            name=op.f("fk_calendar_feeds_user_id_partner_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_calendar_feeds")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_calendar_feeds_token_hash")),
    )
    op.create_table(
        "casework_preferences",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("digest_opt_in", sa.Boolean(), nullable=False),
        sa.Column("digest_sent_on", sa.Date(), nullable=True),
        sa.Column("changes_dismissed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["partner_users.id"],
            name=op.f("fk_casework_preferences_user_id_partner_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_casework_preferences")),
    )

    op.create_table(
        "invitations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("invited_by_user_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["partner_users.id"],
            name=op.f("fk_invitations_user_id_partner_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invited_by_user_id"],
            ["partner_users.id"],
            name=op.f("fk_invitations_invited_by_user_id_partner_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitations")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_invitations_token_hash")),
    )


def downgrade() -> None:
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.drop_index("ix_appointments_start_time")
    op.drop_table("invitations")
    op.drop_table("casework_preferences")
    op.drop_table("calendar_feeds")
    op.drop_table("attention_handled")
