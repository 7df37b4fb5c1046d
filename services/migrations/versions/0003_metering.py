"""metering: samples, rollups, credit ledger, balances

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 07:42:33.310971
"""

from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa
import core.models

# 10,000 credits, in credit units (services/credits.py); written out, as a migration must not change later.
OPENING_GRANT_UNITS = 10_000 * 60_000_000


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('credit_ledger',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('cluster_id', sa.Uuid(), nullable=True),
    sa.Column('period_start', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('period_end', core.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('by_id', sa.Uuid(), nullable=True),
    sa.Column('time', core.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['by_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cluster_id', 'period_start')
    )
    with op.batch_alter_table('credit_ledger', schema=None) as batch_op:
        batch_op.create_index('ix_credit_ledger_tenant', ['tenant_id', 'id'], unique=False)

    op.create_table('metric_rollups',
    sa.Column('cluster_id', sa.Uuid(), nullable=False),
    sa.Column('resolution', sa.String(length=4), nullable=False),
    sa.Column('start', core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('samples', sa.Integer(), nullable=False),
    sa.Column('cpu_use', sa.BigInteger(), nullable=False),
    sa.Column('memory_use', sa.BigInteger(), nullable=False),
    sa.Column('storage_use', sa.BigInteger(), nullable=False),
    sa.Column('cores', sa.Integer(), nullable=False),
    sa.Column('memory_gb', sa.Integer(), nullable=False),
    sa.Column('storage_gb', sa.Integer(), nullable=False),
    sa.Column('credit_units', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ),
    sa.PrimaryKeyConstraint('cluster_id', 'resolution', 'start')
    )
    with op.batch_alter_table('metric_rollups', schema=None) as batch_op:
        batch_op.create_index('ix_metric_rollups_tenant', ['tenant_id', 'resolution', 'start'], unique=False)

    op.create_table('metric_samples',
    sa.Column('cluster_id', sa.Uuid(), nullable=False),
    sa.Column('minute', core.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('cpu_use', sa.Integer(), nullable=False),
    sa.Column('memory_use', sa.Integer(), nullable=False),
    sa.Column('storage_use', sa.Integer(), nullable=False),
    sa.Column('cores', sa.Integer(), nullable=False),
    sa.Column('memory_gb', sa.Integer(), nullable=False),
    sa.Column('storage_gb', sa.Integer(), nullable=False),
    sa.Column('credit_units', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], ),
    sa.PrimaryKeyConstraint('cluster_id', 'minute')
    )
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('metering_from', core.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('metering_to', core.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('metered_until', core.models.UTCDateTime(timezone=True), nullable=True))

    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('credit_balance', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('budget_policy', sa.String(length=10), nullable=False, server_default='flag'))

    # Tenants that existed before metering get the opening grant new tenants get, so they can go on
    # working; clusters available now are metered from now on.
    now = datetime.now(UTC)
    tenants = sa.table('tenants', sa.column('id', sa.Uuid()), sa.column('credit_balance', sa.BigInteger()))
    ledger = sa.table(
        'credit_ledger', sa.column('tenant_id', sa.Uuid()), sa.column('kind', sa.String()),
        sa.column('amount', sa.BigInteger()), sa.column('note', sa.Text()),
        sa.column('time', core.models.UTCDateTime(timezone=True)),
    )
    connection = op.get_bind()
    for (tenant_id,) in connection.execute(sa.select(tenants.c.id)).all():
        connection.execute(ledger.insert().values(
            tenant_id=tenant_id, kind='grant', amount=OPENING_GRANT_UNITS, note='opening grant', time=now
        ))
        connection.execute(tenants.update().where(tenants.c.id == tenant_id).values(credit_balance=OPENING_GRANT_UNITS))
    clusters = sa.table('clusters', sa.column('status', sa.String()),
                        sa.column('metering_from', core.models.UTCDateTime(timezone=True)))
    connection.execute(clusters.update().where(clusters.c.status == 'available').values(metering_from=now))



def downgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('budget_policy')
        batch_op.drop_column('credit_balance')

    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.drop_column('metered_until')
        batch_op.drop_column('metering_to')
        batch_op.drop_column('metering_from')

    op.drop_table('metric_samples')
    with op.batch_alter_table('metric_rollups', schema=None) as batch_op:
        batch_op.drop_index('ix_metric_rollups_tenant')

    op.drop_table('metric_rollups')
    with op.batch_alter_table('credit_ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_credit_ledger_tenant')

    op.drop_table('credit_ledger')
