"""Elastic clusters and leases: scaling and the lease's end on requests and clusters, the nodes charged
now, each node's power and uptime

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 21:40:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

import core.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE on both databases (as 0005): a batch operation would copy the tables, which the
    # foreign keys to them forbid once they have rows.
    for table in ("cluster_requests", "clusters"):
        op.add_column(table, sa.Column("min_nodes", sa.Integer(), nullable=True))
        op.add_column(table, sa.Column("idle_seconds", sa.Integer(), nullable=True))
        op.add_column(table, sa.Column("expires_at", core.models.UTCDateTime(timezone=True), nullable=True))
    op.add_column("clusters", sa.Column("nodes_up", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "cluster_nodes",
        sa.Column("cluster_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("changed_at", core.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"]),
        sa.PrimaryKeyConstraint("cluster_id", "name"),
    )
    op.create_table(
        "node_uptimes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cluster_id", sa.Uuid(), nullable=False),
        sa.Column("node", sa.String(length=63), nullable=False),
        sa.Column("up_from", core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("up_to", core.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_node_uptimes_cluster_until", "node_uptimes", ["cluster_id", "up_to"])
    # Every tenant's standing rates (0005), summed as every later commit sums them: with the catalog's
    # rates of now, and an elastic cluster's nodes up. This runs the application's own sum, so it belongs in
    # the newest migration that adds a column the sum reads.
    from services.credits import refresh_standing_rates

    session = Session(bind=op.get_bind())
    tenants = sa.table("tenants", sa.column("id", sa.Uuid()))
    for (tenant_id,) in session.execute(sa.select(tenants.c.id)).all():
        refresh_standing_rates(session, tenant_id)
    session.flush()


def downgrade() -> None:
    op.drop_index("ix_node_uptimes_cluster_until", table_name="node_uptimes")
    op.drop_table("node_uptimes")
    op.drop_table("cluster_nodes")
    op.drop_column("clusters", "nodes_up")
    for table in ("clusters", "cluster_requests"):
        op.drop_column(table, "expires_at")
        op.drop_column(table, "idle_seconds")
        op.drop_column(table, "min_nodes")
