"""tool and service status reasons, service endpoint and credentials, note keys

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 05:21:51.849066
"""

from alembic import op
import sqlalchemy as sa
import core.models


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cluster_services', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('endpoint', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('credentials_encrypted', sa.Text(), nullable=True))

    with op.batch_alter_table('cluster_tools', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status_reason', sa.Text(), nullable=True))

    with op.batch_alter_table('request_notes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key', sa.Uuid(), nullable=True))
        batch_op.create_unique_constraint('uq_request_notes_key', ['key'])



def downgrade() -> None:
    with op.batch_alter_table('request_notes', schema=None) as batch_op:
        batch_op.drop_constraint('uq_request_notes_key', type_='unique')
        batch_op.drop_column('key')

    with op.batch_alter_table('cluster_tools', schema=None) as batch_op:
        batch_op.drop_column('status_reason')

    with op.batch_alter_table('cluster_services', schema=None) as batch_op:
        batch_op.drop_column('credentials_encrypted')
        batch_op.drop_column('endpoint')
        batch_op.drop_column('status_reason')

