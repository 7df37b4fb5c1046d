"""Requests that resize a cluster: the cluster a request resizes

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 23:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cluster_requests", sa.Column("resizes_cluster_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    op.drop_column("cluster_requests", "resizes_cluster_id")
