"""OIDC users by their identity provider's account; what an Idempotency-Key's call created

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 14:30:00
"""

import sqlalchemy as sa
from alembic import op

import hpcinfra.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # OIDC sign-in matches a user by the identity provider's (iss, sub), not by e-mail (hpcinfra/oidc.py).
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("oidc_issuer", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("oidc_subject", sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint("uq_users_oidc_account", ["oidc_issuer", "oidc_subject"])
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resource", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("interrupted_at", hpcinfra.models.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_column("interrupted_at")
        batch_op.drop_column("resource")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint("uq_users_oidc_account", type_="unique")
        batch_op.drop_column("oidc_subject")
        batch_op.drop_column("oidc_issuer")
