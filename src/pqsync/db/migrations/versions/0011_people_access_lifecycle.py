"""people come and go, access record: patient_access_log, users' deactivation

Revision ID: 0011
Revises: 0004
Create Date: 2026-12-07

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


FK = "fk_patient_activity_log_patient_id_patients"


def upgrade() -> None:
    # A patient's change history is a record: deleting the patient may not delete it.
    with op.batch_alter_table("patient_activity_log", schema=None) as batch_op:
        batch_op.drop_constraint(FK, type_="foreignkey")
        batch_op.create_foreign_key(FK, "patients", ["patient_id"], ["id"], ondelete="RESTRICT")
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("partner_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("deactivated_by", sa.String(length=320), nullable=True))
    op.create_table(
        "password_resets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("issued_by", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["partner_users.id"],
            name=op.f("fk_password_resets_user_id_partner_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_resets")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_password_resets_token_hash")),
    )
    with op.batch_alter_table("password_resets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_password_resets_user_id"), ["user_id"], unique=False)
    op.create_table(
        "patient_access_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("user_email", sa.String(length=320), nullable=False),
        sa.Column("user_role", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=True),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("view", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.String(length=300), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("accessed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_access_log")),
    )
    with op.batch_alter_table("patient_access_log", schema=None) as batch_op:
        batch_op.create_index(
            "ix_patient_access_log_patient_at", ["patient_id", "accessed_at"], unique=False
        )
        batch_op.create_index(
            "ix_patient_access_log_user_at", ["user_id", "accessed_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_patient_access_log_accessed_at"), ["accessed_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("password_resets")
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.drop_column("last_seen_at")
    with op.batch_alter_table("patient_activity_log", schema=None) as batch_op:
        batch_op.drop_constraint(FK, type_="foreignkey")
        batch_op.create_foreign_key(FK, "patients", ["patient_id"], ["id"], ondelete="CASCADE")
    op.drop_table("patient_access_log")
    with op.batch_alter_table("partner_users", schema=None) as batch_op:
        batch_op.drop_column("deactivated_by")
        batch_op.drop_column("deactivated_at")
