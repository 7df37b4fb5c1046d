"""indexes for a tenant's requests and clusters, newest first

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 02:00:00
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # GET /requests and GET /clusters page through a tenant's rows newest first: with these the
    # database reads one page from the index instead of sorting all of the tenant's rows for each call.
    op.create_index("ix_cluster_requests_tenant_requested", "cluster_requests", ["tenant_id", "requested_at", "id"])
    op.create_index("ix_clusters_tenant_created", "clusters", ["tenant_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_clusters_tenant_created", table_name="clusters")
    op.drop_index("ix_cluster_requests_tenant_requested", table_name="cluster_requests")
