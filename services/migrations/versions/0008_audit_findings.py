"""OIDC users by their identity provider's account; what an Idempotency-Key's call created; the resume sweep

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 14:30:00
"""

import sqlalchemy as sa
from alembic import op

import core.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE and a unique index on both databases (as 0005): a batch operation would copy the
    # tables, which the foreign keys to them forbid once they have rows.
    # OIDC sign-in matches a user by the identity provider's (iss, sub), not by e-mail (api/oidc.py).
    op.add_column("users", sa.Column("oidc_issuer", sa.String(length=2048), nullable=True))
    op.add_column("users", sa.Column("oidc_subject", sa.String(length=255), nullable=True))
    op.create_index("uq_users_oidc_account", "users", ["oidc_issuer", "oidc_subject"], unique=True)
    op.add_column("idempotency_keys", sa.Column("resource", sa.String(length=100), nullable=True))
    op.add_column(
        "idempotency_keys", sa.Column("interrupted_at", core.models.UTCDateTime(timezone=True), nullable=True)
    )
    sweeps = op.create_table(
        "sweeps",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("held_until", core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("swept_until", core.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.bulk_insert(sweeps, [{"name": "resume"}])
    # The sweep reads what was written since its last look, among the pending rows only.
    op.create_index("ix_cluster_requests_status_requested", "cluster_requests", ["status", "requested_at"])
    op.create_index("ix_clusters_status_created", "clusters", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_clusters_status_created", table_name="clusters")
    op.drop_index("ix_cluster_requests_status_requested", table_name="cluster_requests")
    op.drop_table("sweeps")
    op.drop_column("idempotency_keys", "interrupted_at")
    op.drop_column("idempotency_keys", "resource")
    op.drop_index("uq_users_oidc_account", table_name="users")
    op.drop_column("users", "oidc_subject")
    op.drop_column("users", "oidc_issuer")
