"""credential provenance: who set each account's password and reset its second factor

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import appliance.core.db

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing accounts get no provenance: nothing says which admin knows their credentials,
    # so none is taken to control them (the audit log has the history until now).
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("password_set_by", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column(
                "password_set_at", appliance.core.db.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(sa.Column("totp_reset_by", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("totp_reset_at", appliance.core.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "password_set_kept_totp",
                sa.Boolean(),
                server_default=sa.false(),
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("kept_totp_known_by", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("kept_totp_known_by")
        batch_op.drop_column("password_set_kept_totp")
        batch_op.drop_column("totp_reset_at")
        batch_op.drop_column("totp_reset_by")
        batch_op.drop_column("password_set_at")
        batch_op.drop_column("password_set_by")
